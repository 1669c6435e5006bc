"""uvicorn's two HTTP protocols with the same bounds on a request head (see serving.py).

uvicorn only times out a connection that is idle after an answer (any byte received cancels
that) and sets no timer on a new connection; h11 measures only a head still incomplete after
a read, and takes a request with both Content-Length and Transfer-Encoding; httptools has no
bound on a head at all, and parses every request a client pipelines while the first is still
being answered. These subclasses add what is missing from outside the parsers, so that they
stay as fast as before:

* `HeadDeadline`: a connection whose next request head is late is closed;
* `H11WithHeadDeadline`: h11, a head over `max_head_bytes` or both length headers refused;
* `HttpToolsWithHeadLimits`: httptools fed in pieces that end where a head or a request can
  end, each head counted, and what follows a whole request held back until its answer is out.

Both also send each answer's head together with its body (`OneWriteAnswer`): uvicorn writes
them apart, and each write to a socket is a system call and, on loopback, a TCP segment the
client wakes up for.

They rely on uvicorn's protocol classes (`data_received`, `on_headers_complete`,
`on_response_complete`, `flow`, `conn`), which is why pyproject.toml bounds uvicorn's version.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["H11WithHeadDeadline", "HeadDeadline", "HttpToolsWithHeadLimits", "OneWriteAnswer"]


class HeadDeadline:
    """Closes a connection whose request head is not complete `head_timeout` seconds after
    the connection opened or the previous answer went out. Mixed into a uvicorn protocol,
    which provides `loop` and `transport`; the subclass says when a head is owed.

    One timer per connection, re-armed only when it fires early: starting and stopping the
    deadline once per request is then an assignment, not a timer scheduled and cancelled.
    """

    head_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None
    _head_due: float | None = None  # loop.time() by which the owed head must be complete
    loop: Any
    transport: Any

    def _head_owed(self) -> bool:
        raise NotImplementedError

    def _start_head_timer(self) -> None:
        if self._head_due is None:
            self._head_due = self.loop.time() + self.head_timeout
            if self._head_timer is None:
                self._head_timer = self.loop.call_at(self._head_due, self._head_check)

    def _head_check(self) -> None:
        self._head_timer = None
        due = self._head_due
        if due is None:
            return  # no head owed now; the next start arms a timer again
        if self.loop.time() < due:
            self._head_timer = self.loop.call_at(due, self._head_check)  # the deadline moved on
        elif self._head_owed() and not self.transport.is_closing():
            self.transport.close()

    def _stop_head_timer(self) -> None:
        self._head_due = None

    def _cancel_head_timer(self) -> None:
        """For a connection that is gone: its timer must not hold it until it fires."""
        self._head_due = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class OneWriteAnswer:
    """A request cycle's transport that holds the head of its answer until what follows it
    (the body, a close, or the end of the answer), and writes both at once.

    Only the head is held, and only between the two ASGI messages that carry an answer, so a
    streamed body still goes out chunk by chunk.
    """

    __slots__ = ("_cycle", "_head", "_on_response", "_transport", "_wrote_head")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._transport = cycle.transport
        self._head: bytes | None = None
        self._wrote_head = False
        self._on_response = cycle.on_response
        cycle.transport = self
        cycle.on_response = self._answered

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif not self._wrote_head and self._cycle.response_started:
            # The first write once the answer has started is its head (a "100 Continue"
            # comes before the answer starts, and is written at once).
            self._wrote_head = True
            self._head = data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def _answered(self) -> None:
        # An answer with no body write (to HEAD) ends here with its head still held.
        self.flush()
        self._on_response()


def _answer_in_one_write(cycle: Any) -> None:
    """Give a request cycle uvicorn has just made a OneWriteAnswer, once."""
    if cycle is not None and not isinstance(cycle.transport, OneWriteAnswer):
        OneWriteAnswer(cycle)


def _flush_answer(cycle: Any) -> None:
    """Write the head an unfinished answer holds, before the protocol writes on its own."""
    if cycle is not None and isinstance(cycle.transport, OneWriteAnswer):
        cycle.transport.flush()


class BoundedRequests(h11.Connection):
    """h11's server side, refusing what h11 itself takes: a request head over `max_head_bytes`
    that arrives whole (h11 measures only a head still incomplete after a read), and a request
    with both Content-Length and Transfer-Encoding (h11 reads the body as chunked and then
    the bytes after it as the next request; RFC 9112 6.1 says to close instead)."""

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        if self.their_state is not h11.IDLE:
            return super().next_event()
        # While a head is owed, what h11 has buffered starts with it: the head is what a
        # request takes from the buffer. (`trailing_data` copies the buffer, at most a read.)
        buffered = len(self.trailing_data[0])
        event = super().next_event()
        if isinstance(event, h11.Request):
            if buffered - len(self.trailing_data[0]) > self.max_head_bytes:
                raise h11.RemoteProtocolError("Request head too large.", error_status_hint=431)
            names = {name for name, _ in event.headers}
            if {b"content-length", b"transfer-encoding"} <= names:
                raise h11.RemoteProtocolError("Content-Length with Transfer-Encoding.")
        return event


class H11WithHeadDeadline(HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol, refusing a request head over `max_head_bytes` (400, connection
    closed) and closing a connection whose next request head is late."""

    max_head_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = BoundedRequests(self.max_head_bytes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        _answer_in_one_write(self.cycle)  # a request read now has its cycle, not yet running
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        _answer_in_one_write(self.cycle)  # the pipelined request started here, if any
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        _flush_answer(self.cycle)  # an answer already under way goes out whole, first
        super().send_400_response(msg)

    def _head_owed(self) -> bool:
        return bool(self.conn.their_state is h11.IDLE)

    def _watch_head(self) -> None:
        """Keep the deadline running while the client owes a request head, and only then."""
        if self._head_owed() and not self.transport.is_closing():
            self._start_head_timer()
        else:
            self._stop_head_timer()


# A request head ends with an empty line, and so does a chunked body (after its last chunk
# and trailers). The parser requires CRLF: a bare LF is a 400.
BLANK_LINE = b"\r\n\r\n"


class HttpToolsWithHeadLimits(HeadDeadline, HttpToolsProtocol):
    """A request head over `max_head_bytes` gets 400 and the connection closed before the app
    sees it; one not complete within `head_timeout` of the connection opening or of the
    previous answer has its connection closed. A pipelined request is parsed only once the
    answer before it is out, and reading pauses meanwhile."""

    max_head_bytes: int = 64 * 1024
    # True while the client owes a request head: from the connection's start, and from
    # the end of each request once it is answered, until the parser has read the next head.
    _in_head = True
    _head_bytes = 0  # bytes of the owed head read so far
    _answered = False  # the current request's answer is out, maybe before its body ended
    _answer_owed = False  # a request was read whole, and its answer is not out yet
    _body_left: int | None = None  # bytes still to come of a Content-Length body
    _tail = b""  # the last bytes parsed of a head or chunked body: an empty line may span reads
    _held = b""  # bytes read while an answer is owed, parsed once it is out

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._held += data
        self._parse_held()

    def _parse_held(self) -> None:
        data, self._held = self._held, b""
        view = memoryview(data)
        start = 0
        while start < len(data) and not self.transport.is_closing():
            if self._answer_owed:
                self._held = data[start:]  # at most about one read: reading pauses here
                self.flow.pause_reading()
                return
            end = self._piece_end(data, start)
            if self._in_head:
                self._head_bytes += end - start
                if self._head_bytes > self.max_head_bytes:
                    self._stop_head_timer()
                    self.send_400_response("Request head too large.")
                    return
            elif self._body_left:
                self._body_left -= end - start
            # Set before parsing: a head or request ending at `end` clears it.
            self._tail = (self._tail + data[max(start, end - 3) : end])[-3:]
            super().data_received(data if end - start == len(data) else view[start:end])  # type: ignore[arg-type]
            start = end

    def _piece_end(self, data: bytes, start: int) -> int:
        """Where the next piece to parse ends: the end of the read, or the first place after
        `start` where the head, or the request, may end."""
        if self._body_left:
            return min(len(data), start + self._body_left)
        spanning = (self._tail + data[start : start + 3]).find(BLANK_LINE)
        if spanning >= 0:
            return start + spanning + len(BLANK_LINE) - len(self._tail)
        found = data.find(BLANK_LINE, start)
        return len(data) if found < 0 else found + len(BLANK_LINE)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._answered = False
        self._tail = b""
        self._body_left = self._content_length()
        self._stop_head_timer()
        super().on_headers_complete()
        _answer_in_one_write(self.cycle)

    def send_400_response(self, msg: str) -> None:
        _flush_answer(self.cycle)  # an answer already under way goes out whole, first
        super().send_400_response(msg)

    def _content_length(self) -> int | None:
        # The parser has checked it: one value, digits (it refuses it with Transfer-Encoding).
        for name, value in self.headers:
            if name == b"content-length":
                return int(value)
        return None

    def on_message_complete(self) -> None:
        self._body_left = None
        self._tail = b""
        if self._answered:  # answered before its body ended (413, say): the next head is owed
            self._in_head = True
            self._start_head_timer()
        else:
            self._answer_owed = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._answered = True
        super().on_response_complete()
        if self._answer_owed:
            self._answer_owed = False
            self._in_head = True
            self._parse_held()  # a pipelined request, if one came
        # A pipelined request's head may already be read; only an owed head is timed.
        if self._in_head and not self.transport.is_closing():
            self._start_head_timer()

    def _head_owed(self) -> bool:
        return self._in_head
