"""A verified body read as a Stripe event envelope, in a form both stores can hold.

Whatever a body holds, reading it ends in an envelope or in `BadEvent` (a 400): never in a
RecursionError from deep nesting, nor in a value PostgreSQL or SQLite would refuse later,
in the middle of a batch of other deliveries.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

import orjson

from payhook.plugins.types import Handler
from payhook.store.eventlog import Delivery

__all__ = [
    "MAX_DEPTH",
    "MAX_ID_LENGTH",
    "THIN_OBJECT",
    "BadEvent",
    "WrongRoute",
    "parse_event",
    "parse_thin_event",
    "to_delivery",
    "to_thin_delivery",
]

# The `object` of a thin event notification (an event destination's "thin" payload).
THIN_OBJECT = "v2.core.event"
THIN_SOURCE = "thin"

# Stripe's events nest about ten levels; far below the parser's recursion limit.
MAX_DEPTH = 64
MAX_ID_LENGTH = 255
MAX_API_VERSION_LENGTH = 64

# A JSON string, escapes and all, so that the brackets inside it are not counted. The
# closing quote is optional so that an unterminated string is consumed in one linear pass
# instead of being retried from every later quote.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_NESTING_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# PostgreSQL refuses NUL in text, and a lone surrogate has no UTF-8 form for either store.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A day inside datetime's range, so that the time can be shown in any time zone (psycopg
# converts timestamptz to the session's zone when it reads one back).
_EARLIEST_CREATED = (datetime.min.replace(tzinfo=UTC) + timedelta(days=1) - _EPOCH) // timedelta(seconds=1)
_LATEST_CREATED = (datetime.max.replace(tzinfo=UTC) - timedelta(days=1) - _EPOCH) // timedelta(seconds=1)


class BadEvent(Exception):
    """The verified body is not an event payhook can take; answered with 400 `code`."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


class WrongRoute(BadEvent):
    """A verified body of the other kind: a thin event on the snapshot route, or back."""

    def __init__(self, thin: bool) -> None:
        self.thin = thin  # True: the body is a thin event
        kind = f'a thin event ("object": "{THIN_OBJECT}")' if thin else 'a snapshot event ("object": "event")'
        super().__init__("wrong_route", f"the body is {kind}")


def parse_event(body: bytes) -> tuple[dict[str, Any], str]:
    """The event envelope and the body's text; raises `BadEvent` saying what is wrong."""
    event, text = _parse_object(body)
    if event.get("object") == THIN_OBJECT:
        raise WrongRoute(thin=True)
    if event.get("object") != "event":
        raise BadEvent("not_an_event", 'the body is not a Stripe event (no "object": "event")')
    _check_id_and_type(event)
    return event, text


def parse_thin_event(body: bytes) -> tuple[dict[str, Any], str]:
    """A thin event notification and the body's text; raises `BadEvent` as parse_event."""
    event, text = _parse_object(body)
    if event.get("object") == "event":
        raise WrongRoute(thin=False)
    if event.get("object") != THIN_OBJECT:
        raise BadEvent("not_an_event", f'the body is not a thin event (no "object": "{THIN_OBJECT}")')
    _check_id_and_type(event)
    return event, text


def _check_id_and_type(event: dict[str, Any]) -> None:
    for name in ("id", "type"):
        value = event.get(name)
        if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH or not _storable(value):
            raise BadEvent("not_an_event", f"the event has no valid {name!r}")


def _parse_object(body: bytes) -> tuple[dict[str, Any], str]:
    """The body as a JSON object, and its text.

    Read by orjson, which takes a few times less CPU than the standard library. Where both
    read a text, the fields payhook uses come out the same; what differs is an integer past
    64 bits, which orjson reads as a float: `created` is then unset either way, and the
    `event_stored` observers get the standard library's reading (Payhook.event_stored).
    """
    try:
        # Stripe sends UTF-8; the stored payload is this exact text.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent("invalid_json", "the body is not UTF-8") from None
    if _nests_deeper_than(text, MAX_DEPTH):
        raise BadEvent("invalid_json", f"the body nests arrays and objects deeper than {MAX_DEPTH} levels")
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson refuses some of what the standard library reads (lone surrogates, numbers
        # past a float's range): the standard library decides, as it always has.
        try:
            event = json.loads(text, parse_constant=_refuse_constant)
        except ValueError:
            raise BadEvent("invalid_json", "the body is not JSON") from None
    if not isinstance(event, dict):
        raise BadEvent("not_an_event", 'the body is not a Stripe event (no "object": "event")')
    return event, text


def to_delivery(
    tenant: str, event: dict[str, Any], payload: str, secret_index: int, handlers: tuple[Handler, ...]
) -> Delivery:
    """The row to store for a parsed `event`; informative fields that do not fit are None."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    object_id = obj.get("id") if isinstance(obj, dict) else None
    return Delivery(
        tenant=tenant,
        stripe_event_id=event["id"],
        type=event["type"],
        livemode=event.get("livemode") is True,
        api_version=_short(event.get("api_version"), MAX_API_VERSION_LENGTH),
        account=_short(event.get("account"), MAX_ID_LENGTH),
        object_id=_short(object_id, MAX_ID_LENGTH),
        created=_created(event.get("created")),
        payload=payload,
        secret_index=secret_index,
        handlers=handlers,
    )


def to_thin_delivery(
    tenant: str, event: dict[str, Any], payload: str, secret_index: int, handlers: tuple[Handler, ...]
) -> Delivery:
    """The row to store for a thin event: its related object's id, its context (the
    Connect account) and its creation time (ISO 8601 in thin events) when they fit."""
    related = event.get("related_object")
    object_id = related.get("id") if isinstance(related, dict) else None
    return Delivery(
        tenant=tenant,
        stripe_event_id=event["id"],
        type=event["type"],
        livemode=event.get("livemode") is True,
        api_version=None,
        account=_short(event.get("context"), MAX_ID_LENGTH),
        object_id=_short(object_id, MAX_ID_LENGTH),
        created=_iso_created(event.get("created")),
        payload=payload,
        secret_index=secret_index,
        handlers=handlers,
        source=THIN_SOURCE,
    )


def _iso_created(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > MAX_API_VERSION_LENGTH:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON `text` nests arrays and objects more than `limit` deep.

    Counted before parsing, because the parser recurses once per level. Exact for valid
    JSON; for anything else the parser rejects the text whichever way this answers.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # no more levels than opening brackets: the usual case, nearly free
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_NESTING_STEP.__getitem__, brackets)), default=0) > limit


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are Python's extensions, not JSON; Stripe never sends them.
    raise ValueError(f"{name} is not JSON")


def _storable(value: str) -> bool:
    return _UNSTORABLE.search(value) is None


def _short(value: Any, limit: int) -> str | None:
    """`value` if it is a string that fits its column; these fields are informative only."""
    if isinstance(value, str) and len(value) <= limit and _storable(value):
        return value
    return None


def _created(value: Any) -> datetime | None:
    """The event's creation time, or None when `created` is not a storable Unix time."""
    # bool is a subclass of int, and a float is not what Stripe sends.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if not _EARLIEST_CREATED <= value <= _LATEST_CREATED:
        return None
    return _EPOCH + timedelta(seconds=value)
