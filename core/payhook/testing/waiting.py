"""Waiting on a state, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

from payhook.testing.failing import fail

__all__ = ["wait_until"]


def wait_until(
    condition: Callable[[], object], *, timeout: float = 30.0, what: str = "the condition"
) -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds.

    For states reached in other threads or processes (a worker finishing a run, an observer
    called after the answer): tests wait on states, never on fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.005)
