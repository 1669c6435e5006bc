"""uvicorn's h11 protocol with a deadline on each request head (see payhook.serving)."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["H11WithHeadDeadline"]


class H11WithHeadDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose next request head is late.

    uvicorn itself only times out a connection that is idle after an answer, and any
    byte received cancels that; it sets no timer on a new connection at all.
    """

    head_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

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

    def _watch_head(self) -> None:
        """Keep the deadline running while the client owes a request head, and only then."""
        owed = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not owed:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
