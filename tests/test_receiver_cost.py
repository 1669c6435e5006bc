"""What one delivery costs the receiver, as behaviour: each answer leaves in one write.

A real uvicorn server with payhook's app and protocols, over a real socket; its transports
count the writes they are given, which is what the system calls follow (one `send()` each).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from payhook import hookimpl
from payhook.config import load_config
from payhook.receive.app import PayhookApp, create_app
from payhook.receive.observe import Answer
from payhook.server.serving import HTTP_PARSERS, uvicorn_options
from payhook.testing import TEST_SECRET, signed_headers, wait_until
from payhook.testing.samples import load_event
from starlette.responses import JSONResponse

from .processes import free_port

TENANT = "shop"


@dataclass
class Writes:
    """Every non-empty write any connection's transport was given, in order."""

    made: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, data: bytes) -> None:
        if data:  # an empty write sends nothing
            with self.lock:
                self.made.append(bytes(data))

    def take(self) -> list[bytes]:
        with self.lock:
            made, self.made = self.made, []
        return made


class CountingTransport:
    """A transport that records what is written to it, and passes everything on."""

    def __init__(self, transport: Any, writes: Writes) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.add(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@dataclass
class Receiver:
    port: int
    writes: Writes

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@pytest.fixture(params=HTTP_PARSERS)
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    """payhook's app behind `payhook serve`'s protocol for each parser, in a thread."""
    path = tmp_path / "payhook.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/payhook.db"\n\n[processing]\nworker = false\n\n'
        f'[ingest]\nmax_body_bytes = 100000\n\n[tenants.{TENANT}]\nwebhook_secrets = ["{TEST_SECRET}"]\n'
    )
    app = create_app(load_config(path), plugins={}, migrate=True)
    writes = Writes()
    options = uvicorn_options(request.param, head_timeout=10.0, limit_concurrency=None)

    class Counted(options.pop("http")):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(CountingTransport(transport, writes))

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", http=Counted, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="receiver", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), what="the receiver to listen")
    assert server.started
    writes.take()
    yield Receiver(port, writes)
    server.should_exit = True
    thread.join(30)


def delivery(event_id: str) -> bytes:
    """A signed delivery of a new event, as raw HTTP/1.1."""
    event = load_event("payment_intent.succeeded")
    event["id"] = event_id
    body = json.dumps(event).encode()
    return request("POST", f"/{TENANT}", body, signed_headers(body))


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: payhook.test", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket, buffered: bytearray, *, head_only: bool = False) -> bytes:
    """One whole answer's bytes from `sock` (what is read past it stays in `buffered`)."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-answer after {bytes(buffered)!r}"
        buffered += chunk
    head_end = buffered.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buffered[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    end = head_end if head_only else head_end + length
    while len(buffered) < end:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-body"
        buffered += chunk
    answer = bytes(buffered[:end])
    del buffered[:end]
    return answer


def test_each_answer_to_a_delivery_is_one_write(receiver: Receiver) -> None:
    buffered = bytearray()
    with receiver.connect() as sock:
        for number in range(3):  # one keep-alive connection
            sock.sendall(delivery(f"evt_one_write_{number}"))
            answer = read_answer(sock, buffered)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert answer.endswith(b'{"status":"ignored","event":"evt_one_write_%d"}' % number)
            assert receiver.writes.take() == [answer]


def test_an_error_answer_is_one_write(receiver: Receiver) -> None:
    buffered = bytearray()
    with receiver.connect() as sock:
        sock.sendall(request("POST", f"/{TENANT}", b"{}", {"Stripe-Signature": "t=1,v1=00"}))
        answer = read_answer(sock, buffered)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "stale_timestamp"
        assert receiver.writes.take() == [answer]


def test_a_body_too_large_is_answered_in_one_write_and_the_connection_closed(receiver: Receiver) -> None:
    buffered = bytearray()
    with receiver.connect() as sock:
        # Only the head: the declared length is enough for the answer, and a body left unread
        # would make the close a reset that can discard the answer before it is read.
        sock.sendall(request("POST", f"/{TENANT}", b"x" * 100001).split(b"\r\n\r\n")[0] + b"\r\n\r\n")
        answer = read_answer(sock, buffered)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert sock.recv(65536) == b""  # closed: the rest of the body cannot be told from a request
        assert receiver.writes.take() == [answer]


def test_an_answer_without_a_body_goes_out_and_the_connection_still_serves(receiver: Receiver) -> None:
    buffered = bytearray()
    with receiver.connect() as sock:
        sock.sendall(request("HEAD", "/healthz"))
        head = read_answer(sock, buffered, head_only=True)
        assert head.startswith(b"HTTP/1.1 200 ")
        sock.sendall(delivery("evt_after_head"))
        answer = read_answer(sock, buffered)
        assert answer.endswith(b'"event":"evt_after_head"}')
        assert receiver.writes.take() == [head, answer]


def test_pipelined_deliveries_are_answered_in_order_one_write_each(receiver: Receiver) -> None:
    buffered = bytearray()
    with receiver.connect() as sock:
        sock.sendall(delivery("evt_pipelined_0") + delivery("evt_pipelined_1"))
        first = read_answer(sock, buffered)
        second = read_answer(sock, buffered)
        assert first.endswith(b'"event":"evt_pipelined_0"}')
        assert second.endswith(b'"event":"evt_pipelined_1"}')
        assert receiver.writes.take() == [first, second]


def test_100_continue_is_not_held_back(receiver: Receiver) -> None:
    """A client that waits for "100 Continue" before its body gets it first, at once."""
    raw = delivery("evt_continue")
    head, body = raw.split(b"\r\n\r\n", 1)
    buffered = bytearray()
    with receiver.connect() as sock:
        sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        continued = read_answer(sock, buffered, head_only=True)
        assert continued.startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        answer = read_answer(sock, buffered)
        assert answer.endswith(b'"event":"evt_continue"}')
        assert receiver.writes.take() == [continued, answer]


# --- The direct route for deliveries answers exactly as Starlette's layers do ---------------


class PassThrough:
    """A host's middleware that does nothing: with it, every request takes Starlette's path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def app_at(directory: Path, *, through_starlette: bool) -> PayhookApp:
    directory.mkdir()
    path = directory / "payhook.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{directory}/payhook.db"\n\n[processing]\nworker = false\n\n'
        f'[tenants.{TENANT}]\nwebhook_secrets = ["{TEST_SECRET}"]\n'
    )
    app = create_app(load_config(path), plugins={}, migrate=True)
    if through_starlette:
        app.add_middleware(PassThrough)
    return app


async def answer_of(
    app: PayhookApp, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> list[Any]:
    """The ASGI messages `app` sends for one request, and what it raised (or None); with no
    `body`, reading it raises."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
    }
    messages: list[Any] = [] if body is None else [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Any] = []

    async def receive() -> Any:
        if not messages:
            raise RuntimeError("the connection broke")  # a crash inside the endpoint
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except Exception as exc:
        return [*sent, repr(exc)]
    return [*sent, None]


def requests_to_answer() -> list[tuple[str, str, bytes, dict[str, str]]]:
    event = load_event("payment_intent.succeeded")
    event["id"] = "evt_direct_route"
    body = json.dumps(event).encode()
    signed = {"Content-Type": "application/json", **signed_headers(body)}
    return [
        ("POST", f"/{TENANT}", body, signed),
        ("POST", f"/{TENANT}", body, signed),  # a duplicate
        ("POST", f"/{TENANT}/thin", body, signed),  # no thin secrets
        ("POST", "/nobody", body, signed),
        ("POST", "/healthz", body, signed),  # a reserved name: a wrong method, not a tenant
        ("POST", f"/{TENANT}/", body, signed),
        ("POST", f"/{TENANT}/thin/more", body, signed),
        ("POST", f"/{TENANT}/thick", body, signed),
        ("GET", f"/{TENANT}", b"", {}),
        ("POST", f"/{TENANT}", body, {"Stripe-Signature": "t=1,v1=00"}),
        ("POST", f"/{TENANT}", b"x" * 10, {"Content-Length": "x"}),
    ]


def test_deliveries_are_answered_alike_with_and_without_starlettes_layers(tmp_path: Path) -> None:
    direct = app_at(tmp_path / "direct", through_starlette=False)
    layered = app_at(tmp_path / "layered", through_starlette=True)

    async def both() -> None:
        async with direct.payhook.lifespan(), layered.payhook.lifespan():
            for method, path, body, headers in requests_to_answer():
                expected = await answer_of(layered, method, path, body, headers)
                assert await answer_of(direct, method, path, body, headers) == expected, (method, path)
            # A crash inside the endpoint: the same 500 answer, and raised for the server's log.
            method, path, body, headers = requests_to_answer()[0]
            crashed = await answer_of(layered, method, path, None, headers)
            assert crashed[0]["status"] == 500
            assert crashed[-1] == "RuntimeError('the connection broke')"
            assert await answer_of(direct, method, path, None, headers) == crashed

    asyncio.run(both())
    assert direct._deliveries_direct is True
    assert layered._deliveries_direct is False


# --- The fast JSON reader: the answers and the stored fields of the standard library -------


def event_text(event_id: str, name: str, value: str) -> bytes:
    """A real event's JSON with member `name` set to `value` as written (what json.dumps
    refuses to write, too)."""
    event = load_event("payment_intent.succeeded")
    event["id"] = event_id
    event.pop(name, None)
    return (f'{{"{name}": {value}, ' + json.dumps(event)[1:]).encode()


@pytest.mark.parametrize(
    ("name", "value", "answer"),
    [
        ("amount_big", "1180591620717411303424", "ignored"),  # 2**70: orjson reads a float
        ("amount_huge", "1e400", "ignored"),  # orjson refuses it; the standard library reads inf
        ("note", '"\\ud800"', "ignored"),  # a lone surrogate outside the stored fields
        ("amount", "NaN", "invalid_json"),
        ("amount", "Infinity", "invalid_json"),
    ],
)
def test_bodies_orjson_reads_differently_get_the_standard_librarys_answer(
    make_payhook: Any, name: str, value: str, answer: str
) -> None:
    harness = make_payhook({})
    body = event_text("evt_reader", name, value)
    response = harness.deliver(body)
    assert response.json().get("status", response.json().get("error")) == answer
    stored = [event.payload for event in harness.events()]
    assert stored == ([body.decode()] if answer == "ignored" else [])  # stored, no plugin: ignored


@pytest.mark.parametrize("created", ["1180591620717411303424", "-1180591620717411303424", "1e400", "1.5"])
def test_a_created_no_store_can_hold_is_unset_whichever_parser_read_it(
    make_payhook: Any, created: str
) -> None:
    harness = make_payhook({})
    body = event_text("evt_created", "created", created)
    assert harness.deliver(body).json()["status"] == "ignored"
    assert [event.created for event in harness.events()] == [None]


def test_observers_get_the_payload_as_the_standard_library_reads_it(make_payhook: Any) -> None:
    seen: list[dict[str, Any]] = []

    class Observer:
        @hookimpl
        def register_handlers(self, register: Any) -> None:
            register("payment_intent.succeeded", lambda event, ctx: None, name="noop")  # a run: accepted

        @hookimpl
        def event_stored(self, event: Any, tenant: Any) -> None:
            seen.append(event.payload)

    harness = make_payhook({"observer": Observer()}, tenants={"test": {"plugins": ["observer"]}})
    body = event_text("evt_observed", "amount_big", "1180591620717411303424")
    assert harness.deliver(body).json()["status"] == "accepted"
    wait_until(lambda: len(seen) == 1, what="the observer")
    assert seen[0] == json.loads(body)
    assert seen[0]["amount_big"] == 2**70 and isinstance(seen[0]["amount_big"], int)


def test_an_observer_no_tenant_enables_costs_a_delivery_nothing(make_payhook: Any) -> None:
    seen: list[str] = []

    class Observer:
        @hookimpl
        def event_stored(self, event: Any, tenant: Any) -> None:
            seen.append(event.stripe_event_id)

    class Handlers:
        @hookimpl
        def register_handlers(self, register: Any) -> None:
            register("payment_intent.succeeded", lambda event, ctx: None, name="noop")

    # Installed, enabled by no tenant: no StoredEvent is built, no observers' thread started.
    harness = make_payhook(
        {"observer": Observer(), "handlers": Handlers()}, tenants={"test": {"plugins": ["handlers"]}}
    )
    for number in range(3):
        body = event_text(f"evt_unobserved_{number}", "amount", "1")
        assert harness.deliver(body).json()["status"] == "accepted"
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("payhook-observers")]
    assert seen == []


@pytest.mark.parametrize(
    ("content", "status", "headers"),
    [
        ({"status": "accepted", "event": "evt_1"}, 200, None),
        ({"error": "unknown_tenant", "detail": "no tenant 'ü\\n\"x' is configured…"}, 404, None),
        ({"error": "body_too_large", "detail": "the body exceeds 10 bytes"}, 413, {"Connection": "close"}),
        ({"error": "method_not_allowed", "detail": "this path answers POST"}, 405, {"Allow": "POST"}),
    ],
)
def test_an_answer_is_byte_for_byte_starlettes_json_response(
    content: dict[str, Any], status: int, headers: dict[str, str] | None
) -> None:
    answer, expected = Answer(content, status, headers), JSONResponse(content, status, headers)
    assert (answer.status_code, answer.raw_headers, answer.body) == (
        expected.status_code,
        expected.raw_headers,
        expected.body,
    )
    assert answer.content == content
