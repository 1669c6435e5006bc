"""uvicorn's h11 protocol with a deadline on each request head (see payhook.serving)."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .head_deadline import HeadDeadline

__all__ = ["H11WithHeadDeadline"]


class H11WithHeadDeadline(HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose next request head is late."""

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
