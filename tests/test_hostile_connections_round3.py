"""What each HTTP parser of `payhook serve` reads as a request head, a body and a request.

Raw sockets against a real `payhook serve` on both parsers, as in test_hostile_connections.
Where a case needs head and body in one socket read, they go out in ONE `sendall`: HTTP
clients send them apart, and hide what the parser does with them together.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from payhook.testing import signed_headers
from payhook.testing.samples import load_event

from .test_hostile_connections import (
    ANSWER_WITHIN,
    PARSERS,
    Answer,
    Server,
    assert_json_error,
    closed_within,
    read_answer,
    request,
    serving,
)

KiB = 1024
MiB = 1024 * KiB
HEAD_LIMIT = 64 * KiB  # payhook.serving.MAX_HEAD_BYTES, as the docs state it


@pytest.fixture(scope="module", params=PARSERS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("parsers")
    with serving(directory, f"sqlite:///{directory / 'payhook.db'}", "--http", request.param) as running:
        yield running


def event_body(padding: int = 0) -> tuple[str, bytes]:
    """A new event's id and JSON body, `padding` characters longer than the sample."""
    event = load_event("payment_intent.succeeded")
    if padding:
        event["data"]["object"]["metadata"] = {"padding": "x" * padding}
    return event["id"], json.dumps(event).encode()


def delivery(body: bytes, head_size: int | None = None) -> bytes:
    """A signed `POST /conf` of `body`; its head padded to exactly `head_size` bytes if given."""
    signature = signed_headers(body)["Stripe-Signature"]
    raw = request("POST", "/conf", body, Stripe_Signature=signature)
    if head_size is None:
        return raw
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    padding = head_size - len(head) - len("X-Padding: \r\n")
    assert padding > 0
    raw = request("POST", "/conf", body, Stripe_Signature=signature, X_Padding="p" * padding)
    assert raw.index(b"\r\n\r\n") + 4 == head_size
    return raw


def answer_to(server: Server, *writes: bytes) -> Answer:
    """The one answer to `writes`, each one `sendall`; asserts nothing else comes after it."""
    with server.connect() as sock:
        for data in writes:
            sock.sendall(data)
        answer = read_answer(sock)
        assert answer is not None, "the server closed the connection without answering"
        if answer.headers.get("connection") == "close":
            assert no_answer_after(sock), "another answer after one with Connection: close"
    return answer


def no_answer_after(sock: socket.socket) -> bool:
    """True when the server closes `sock` without starting another answer (the rest of a
    chunked one may come first: uvicorn's h11 400 is chunked)."""
    rest = b""
    sock.settimeout(ANSWER_WITHIN)
    try:
        while chunk := sock.recv(65536):
            rest += chunk
    except ConnectionResetError:
        pass
    return b"HTTP/1." not in rest


def status_of_new_delivery(server: Server, event_id: str, body: bytes) -> str:
    """Delivers `body` normally: "ignored" when the store did not hold `event_id` before."""
    answer = answer_to(server, delivery(body))
    assert answer.status == 200, answer
    assert answer.json()["event"] == event_id
    status: str = answer.json()["status"]
    return status


def test_a_large_delivery_whose_head_and_body_come_in_one_read_is_accepted(server: Server) -> None:
    """A proxy forwarding a large event sends head and body at once: only the head counts."""
    # Over 64 KiB in all, and under 100 KiB: on loopback the server's first read takes that
    # whole (TCP's first window splits a larger one; the bug was with head and body together).
    event_id, body = event_body(padding=80 * KiB)
    raw = delivery(body)
    assert HEAD_LIMIT < len(raw) < 100 * KiB and raw.index(b"\r\n\r\n") < 2 * KiB
    for attempt, status in (("first delivery", "ignored"), ("Stripe's retry", "duplicate")):
        answer = answer_to(server, raw)
        assert answer.status == 200, (attempt, answer)
        assert answer.json() == {"status": status, "event": event_id}


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def chunked_delivery(body: bytes, chunk_size: int, *extra_headers: str) -> bytes:
    signature = signed_headers(body)["Stripe-Signature"]
    lines = ["POST /conf HTTP/1.1", "Host: 127.0.0.1", *extra_headers, "Transfer-Encoding: chunked"]
    head = "\r\n".join([*lines, f"Stripe-Signature: {signature}", "", ""]).encode()
    return head + chunked(body, chunk_size)


@pytest.mark.parametrize("http", PARSERS)
def test_a_chunked_body_over_max_body_bytes_in_one_write_gets_413(tmp_path: Path, http: str) -> None:
    """Head and body in one read, as in the test above, the body over max_body_bytes."""
    with serving(
        tmp_path, f"sqlite:///{tmp_path / 'payhook.db'}", "--http", http, ingest="max_body_bytes = 32768"
    ) as server:
        _, body = event_body(padding=70 * KiB)
        raw = chunked_delivery(body, 16 * KiB)
        assert HEAD_LIMIT < len(raw) < 100 * KiB
        answer = answer_to(server, raw)
        assert_json_error(answer, 413, "body_too_large")
        assert answer.headers["connection"] == "close"


@pytest.mark.parametrize("writes", ["one write", "two writes"])
def test_a_request_head_one_byte_over_64_kib_is_refused_and_nothing_is_stored(
    server: Server, writes: str
) -> None:
    event_id, body = event_body()
    raw = delivery(body, head_size=HEAD_LIMIT + 1)
    parts = [raw] if writes == "one write" else [raw[:HEAD_LIMIT], raw[HEAD_LIMIT:]]
    answer = answer_to(server, *parts)
    assert answer.status == 400, answer
    assert answer.headers["connection"] == "close"
    assert status_of_new_delivery(server, event_id, body) == "ignored"


@pytest.mark.parametrize("writes", ["one write", "two writes"])
def test_a_request_head_of_exactly_64_kib_is_accepted(server: Server, writes: str) -> None:
    event_id, body = event_body()
    raw = delivery(body, head_size=HEAD_LIMIT)
    parts = [raw] if writes == "one write" else [raw[: HEAD_LIMIT - 1], raw[HEAD_LIMIT - 1 :]]
    answer = answer_to(server, *parts)
    assert answer.status == 200, answer
    assert answer.json() == {"status": "ignored", "event": event_id}


def test_content_length_with_transfer_encoding_gets_400_and_the_connection_closes(server: Server) -> None:
    """RFC 9112 6.1: a request with both may be smuggling one; what follows it is not read."""
    event_id, body = event_body()
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    raw = chunked_delivery(body, 4 * KiB, f"Content-Length: {len(body)}")
    with server.connect() as sock:
        sock.sendall(raw + smuggled)
        answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 400, answer
        assert answer.headers["connection"] == "close"
        assert no_answer_after(sock), "the bytes after the chunked body were answered"
    assert status_of_new_delivery(server, event_id, body) == "ignored"


def test_pipelined_requests_are_answered_one_by_one_in_order(server: Server) -> None:
    """Requests after a body-less one, a Content-Length body and a chunked body, in one write."""
    first_id, first = event_body()
    second_id, second = event_body()
    pipelined = [
        request("GET", "/healthz"),
        delivery(first),
        request("GET", "/no/such/place"),
        chunked_delivery(second, 1000),
        request("GET", "/healthz"),
    ]
    with server.connect() as sock:
        sock.sendall(b"".join(pipelined))
        answers = read_answers(sock, len(pipelined))
    assert [answer.status for answer in answers] == [200, 200, 404, 200, 200]
    assert [answer.json().get("event") for answer in answers] == [None, first_id, None, second_id, None]


def read_answers(sock: socket.socket, count: int) -> list[Answer]:
    """`count` answers, each with a Content-Length, read from `sock` as they come."""
    data = b""
    answers: list[Answer] = []
    while len(answers) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            status_line, *lines = data[:head_end].decode("latin-1").split("\r\n")
            fields = (line.partition(":") for line in lines)
            headers = {name.strip().lower(): value.strip() for name, _, value in fields}
            end = head_end + 4 + int(headers["content-length"])
            if len(data) >= end:
                answers.append(Answer(int(status_line.split()[1]), headers, data[head_end + 4 : end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(answers)} answers"
        data += chunk
    return answers


def pipeline_without_reading(server: Server, stalled_for: float, budget: int) -> tuple[str, int]:
    """Pipelines small requests as fast as the server takes them, never reading an answer,
    until a `sendall` makes no progress for `stalled_for` seconds ("stalled"), the connection
    is lost, `budget` bytes went out, or the server grew by 256 MiB. Returns which, and the
    bytes sent."""
    batch = request("GET", "/no/such/place") * 2000
    rss_before = server.rss_bytes()
    sent = 0
    with server.connect(timeout=stalled_for) as sock:
        while sent < budget:
            try:
                sock.sendall(batch)
            except TimeoutError:
                return "stalled", sent
            except OSError as exc:
                return f"connection lost: {exc!r}", sent
            sent += len(batch)
            if server.rss_bytes() - rss_before > 256 * MiB:  # stop before it takes the machine
                return "the server's memory grew without bound", sent
    return "budget spent", sent


def test_a_client_that_pipelines_and_never_reads_is_not_read_from_without_bound(server: Server) -> None:
    """Answers a client does not read fill the socket's buffers, and then the server stops
    reading its requests: it holds at most one read of them, and never queues them all."""
    rss_before = server.rss_bytes()
    outcome, sent = pipeline_without_reading(server, stalled_for=3.0, budget=64 * MiB)
    assert outcome == "stalled", (outcome, sent)
    # About 5 MiB here: what the kernel buffers both ways on loopback, and the answers.
    assert sent < 32 * MiB
    assert server.rss_bytes() - rss_before < 32 * MiB


def test_a_connection_answered_before_its_body_ended_and_then_silent_is_closed(server: Server) -> None:
    """An unknown tenant is answered before the body is read; once the body is in, the next
    head is owed, and the head deadline runs as after any answer."""
    raw = request("POST", "/no-such-tenant", b"x" * 1000)
    with server.connect() as sock:
        sock.sendall(raw[:-1000])
        answer = read_answer(sock)
        assert answer is not None
        assert_json_error(answer, 404, "unknown_tenant")
        assert "connection" not in answer.headers  # kept alive: the rest of the body is read
        sock.sendall(raw[-1000:])
        assert closed_within(sock, ANSWER_WITHIN)
