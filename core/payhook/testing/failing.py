"""Failing a test from a helper: pytest's own failure under pytest, an AssertionError elsewhere.

The helpers run in scripts too (a demo, a load generator), where pytest may not be installed.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["fail"]


def fail(message: str, *, pytrace: bool = True) -> NoReturn:
    """Fail the running test with `message` (without a traceback when `pytrace` is false)."""
    try:
        import pytest
    except ImportError:
        raise AssertionError(message) from None
    pytest.fail(message, pytrace=pytrace)
