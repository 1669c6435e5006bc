"""Log lines for people (`text`) or for log collectors (`json`), chosen by `[logging]`.

payhook's own lines about a delivery or a handler run carry their facts as `Fields`: the text
format shows them as `key=value` pairs after the message, the JSON format as keys of the
line's object. Neither ever includes a header, a signing secret or the operator token.

The HTTP and Stripe libraries payhook and its plugins call log too, and their lines can carry
secrets: httpx logs every request's URL at INFO (a Slack webhook URL is a secret), the Stripe
SDK logs every API call at INFO and its details at DEBUG. `guard_library_loggers` (installed
when payhook is imported) moves their routine lines to DEBUG and cuts URLs to their host and
key-shaped values out, wherever the host process sends its logs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from payhook.config import LoggingConfig

__all__ = [
    "TEXT_FORMAT",
    "Fields",
    "JsonFormatter",
    "LibraryLineGuard",
    "configure",
    "guard_library_loggers",
    "redact",
    "route_server_loggers",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a LoggerAdapter (a plugin's ctx.logger) may put on a record, kept by JSON lines.
CONTEXT_ATTRIBUTES = ("tenant", "event", "run")
# uvicorn's loggers, which it configures with its own plain-text handlers.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# The loggers that outbound HTTP and the Stripe SDK write to. A logger's filters see only the
# lines logged on that very logger, not its children's, so each is named.
LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.util.retry",
    "stripe",
)
# A URL: its scheme and host are kept, everything after (a path or query may be a secret).
URL = re.compile(r"(?P<origin>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s\"'<>]+)[^\s\"'<>]*")
# Stripe's API keys, webhook signing secrets and client secrets, wherever they appear.
SECRET_VALUE = re.compile(
    r"\b(?:(?:sk|rk|pk)_(?:live|test)|whsec|ek_(?:live|test))_[A-Za-z0-9]+"
    r"|\b(?:pi|seti|cs)_[A-Za-z0-9]+_secret_[A-Za-z0-9]+"
)


class Fields:
    """A log message made of named facts, rendered only if the line is written."""

    __slots__ = ("facts", "what")

    def __init__(self, what: str, facts: Mapping[str, Any]) -> None:
        self.what = what
        self.facts = facts

    def __str__(self) -> str:
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in self.facts.items())
        return f"{self.what} {pairs}"


# A value that needs no quotes: no space, quote, `=` or backslash.
PLAIN = re.compile(r'[^\s"=\\]+')


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    text = str(value)
    # Quoted when it could be misread: a value from a request path may hold spaces or a
    # newline (which would forge a log line).
    if PLAIN.fullmatch(text) and text.isprintable():
        return text
    return json.dumps(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the line's facts."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(record.msg, Fields):
            line["message"] = record.msg.what
            line.update(record.msg.facts)
        else:
            line["message"] = record.getMessage()
        for name in CONTEXT_ATTRIBUTES:
            value = record.__dict__.get(name)
            if value is not None and name not in line:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already rendered (and redacted) by LibraryLineGuard
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


def configure(config: LoggingConfig | None = None, level: str | None = None) -> None:
    """Send every log line to stderr in `config.format`, at `level` or `config.level`.

    With no arguments: text lines with time and level, at INFO, which is what a host that
    mounts payhook (and has no logging set up of its own) wants. It replaces the root
    logger's handlers; a host with its own logging sets the `payhook` logger's level instead.
    """
    config = config or LoggingConfig()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel((level or config.level).upper())


def redact(text: str) -> str:
    """`text` with URLs cut to their origin and key-shaped values replaced."""
    text = URL.sub(
        lambda match: f"{match['origin']}/…" if len(match[0]) > len(match["origin"]) else match[0], text
    )
    return SECRET_VALUE.sub("[redacted]", text)


class LibraryLineGuard(logging.Filter):
    """On a library's logger: routine lines (below WARNING) count as DEBUG, and every line is
    redacted before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            # One line per HTTP call is chatter at payhook's INFO; it shows under --log-level debug.
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # An exception's text may hold the URL too (httpx puts it in status errors).
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


LIBRARY_GUARD = LibraryLineGuard()


def guard_library_loggers() -> None:
    """Put the guard on every library logger that can carry a secret (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if LIBRARY_GUARD not in logger.filters:
            logger.addFilter(LIBRARY_GUARD)


def route_server_loggers() -> None:
    """Let uvicorn's own lines go through payhook's handler (and so its format).

    uvicorn sets up its loggers with handlers of its own when it starts; called after that,
    this hands them to the root logger.
    """
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
        logger.propagate = True
