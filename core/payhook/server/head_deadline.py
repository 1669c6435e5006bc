"""A deadline on each request head, for uvicorn's protocols (see payhook.serving).

uvicorn only times out a connection that is idle after an answer, and any byte received
cancels that; it sets no timer on a new connection at all.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["HeadDeadline"]


class HeadDeadline:
    """Closes a connection whose request head is not complete `head_timeout` seconds after
    the connection opened or the previous answer went out. Mixed into a uvicorn protocol,
    which provides `loop` and `transport`; the subclass says when a head is owed."""

    head_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None
    loop: Any
    transport: Any

    def _head_owed(self) -> bool:
        raise NotImplementedError

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._head_owed() and not self.transport.is_closing():
            self.transport.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
