"""payhook's log lines through Django's LOGGING."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["django_logging", "route_payhook_logs"]


def route_payhook_logs() -> None:
    """Unless Django's LOGGING configures the `payhook` logger, give it Django's console
    handler at INFO: mounted under uvicorn, payhook's delivery and run lines show up."""
    from django.conf import settings

    configured = (getattr(settings, "LOGGING", None) or {}).get("loggers", {})
    if "payhook" in configured:
        return
    logger = logging.getLogger("payhook")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # a root handler added later (basicConfig) would repeat them


@contextmanager
def django_logging() -> Iterator[None]:
    """While a payhook command runs under manage.py: Django's LOGGING stays in charge (the
    command's own setup of the root logger is left out; its --log-level sets `payhook`'s)."""
    from payhook import logs

    original = logs.configure

    def keep_django(config: Any, level: str | None = None) -> None:
        logging.getLogger("payhook").setLevel((level or config.level).upper())

    logs.configure = keep_django  # type: ignore[assignment]
    try:
        yield
    finally:
        logs.configure = original  # type: ignore[assignment]
