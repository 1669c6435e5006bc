"""`read_body` and the declared `Content-Length`: whatever it says, it never raises anything
but the answers' own exceptions (413, 400), and an honest one reads the body."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from payhook.receive.ingest import BadContentLength, BodyTooLarge, read_body
from starlette.requests import ClientDisconnect, Request

LIMIT = 1024 * 1024


def request(content_length: str, body: bytes = b"{}") -> Request:
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    headers = [(b"content-length", content_length.encode("utf-8"))]
    return Request({"type": "http", "method": "POST", "path": "/t", "headers": headers}, receive)


def read(content_length: str, body: bytes = b"{}") -> bytes:
    return asyncio.run(read_body(request(content_length, body), LIMIT, 5))


@pytest.mark.parametrize(
    "content_length",
    ["9" * 5000, "1" + "0" * 4300, str(LIMIT + 1), "0" * 5000 + "9" * 8],
    ids=["5000 nines", "4301 digits", "limit + 1", "zeros then too large"],
)
def test_an_absurd_length_is_too_large(content_length: str) -> None:
    with pytest.raises(BodyTooLarge):
        read(content_length)


@pytest.mark.parametrize(
    "content_length",
    ["²", "1²", "٣", "\uff11\uff12", "-1", "+2", "1_0", "0x10", "2.0", "", "2, 2", "½"],
)
def test_a_length_that_is_not_a_number_is_a_bad_request(content_length: str) -> None:
    with pytest.raises(BadContentLength):
        read(content_length)
    # ...answered 400 by `receive`, as a body cut short is.
    assert issubclass(BadContentLength, ClientDisconnect)


@pytest.mark.parametrize("content_length", ["2", "0" * 5000 + "2", " 2 "])
def test_an_honest_length_reads_the_body(content_length: str) -> None:
    assert read(content_length) == b"{}"


async def post_raw(app: Any, content_length: bytes) -> int:
    """POST /test to the ASGI app with exactly this Content-Length; the answer's status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/test",
        "raw_path": b"/test",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", content_length), (b"stripe-signature", b"t=1,v1=00")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


@pytest.mark.parametrize(
    ("content_length", "status"),
    [("9" * 5000, 413), ("²", 400), ("1²", 400), ("2", 400)],  # "2": read, then a bad signature
)
def test_the_app_answers_every_declared_length(make_payhook: Any, content_length: str, status: int) -> None:
    harness = make_payhook()
    answer = harness.client.portal.call(post_raw, harness.app, content_length.encode("utf-8"))
    assert answer == status
    assert harness.events() == []
