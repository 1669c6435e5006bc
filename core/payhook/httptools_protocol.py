"""uvicorn's httptools protocol with the bounds of the h11 one (see payhook.serving).

httptools is the faster parser, but uvicorn gives it neither bound on a request head: its
parser keeps appending to a header line that never ends, and no timer runs while a client
that connected, or was just answered, sends nothing or trickles its head. This subclass
adds both, from the outside of the parser, so that it stays as fast as before.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .head_deadline import HeadDeadline

__all__ = ["HttpToolsWithHeadLimits"]


class HttpToolsWithHeadLimits(HeadDeadline, HttpToolsProtocol):
    """A request head over `max_head_bytes` gets 400 and the connection closed; one not
    complete within `head_timeout` of the connection opening or of the previous answer
    has its connection closed."""

    max_head_bytes: int = 64 * 1024
    # True while the client owes a request head: from the connection's start, and from
    # the end of each request's body, until the parser has read the next head whole.
    _in_head = True
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        counting = self._in_head
        super().data_received(data)
        if counting and self._in_head and not self.transport.is_closing():
            # The head is still incomplete after this chunk. Counting the whole chunk may
            # include the end of a previous request, never bytes of a later body: the bound
            # errs by one read at most, and memory stays bounded by it.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._stop_head_timer()
                self.send_400_response("Request head too large.")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request's head may already be read; only an owed head is timed.
        if self._in_head and not self.transport.is_closing():
            self._start_head_timer()

    def _head_owed(self) -> bool:
        return self._in_head
