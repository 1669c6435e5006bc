"""Log lines for people (`text`) or for log collectors (`json`), chosen by `[logging]`.

payhook's own lines about a delivery or a handler run carry their facts as `Fields`: the text
format shows them as `key=value` pairs after the message, the JSON format as keys of the
line's object. Neither ever includes a header, a signing secret or the operator token.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .config import LoggingConfig

__all__ = ["TEXT_FORMAT", "Fields", "JsonFormatter", "configure", "route_server_loggers"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a LoggerAdapter (a plugin's ctx.logger) may put on a record, kept by JSON lines.
CONTEXT_ATTRIBUTES = ("tenant", "event", "run")
# uvicorn's loggers, which it configures with its own plain-text handlers.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


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
        return json.dumps(line, default=str)


def configure(config: LoggingConfig, level: str | None = None) -> None:
    """Send every log line to stderr in `config.format`, at `level` or `config.level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel((level or config.level).upper())


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
