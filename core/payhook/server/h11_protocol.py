"""uvicorn's h11 protocol with the bounds of the httptools one (see payhook.serving)."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from payhook.server.head_deadline import HeadDeadline

__all__ = ["H11WithHeadDeadline"]


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
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _head_owed(self) -> bool:
        return bool(self.conn.their_state is h11.IDLE)

    def _watch_head(self) -> None:
        """Keep the deadline running while the client owes a request head, and only then."""
        if self._head_owed() and not self.transport.is_closing():
            self._start_head_timer()
        else:
            self._stop_head_timer()
