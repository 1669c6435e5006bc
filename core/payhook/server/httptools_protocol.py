"""uvicorn's httptools protocol with the bounds of the h11 one (see payhook.serving).

httptools is the faster parser, but uvicorn gives it no bound on a request head, no timer
while a head is owed, and parses every request a client pipelines (queueing each) while the
first is still being answered. This subclass adds the bounds from outside the parser, so
that it stays fast: it feeds each read to the parser in pieces that end where a head or a
request can end, counts the pieces of each head, and holds back what follows a whole request
until its answer is out, as h11 does.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from payhook.server.head_deadline import HeadDeadline

__all__ = ["HttpToolsWithHeadLimits"]

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
        self._stop_head_timer()
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
