"""Reading a verified body as an event: what is refused, and what is kept but left unset."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from payhook.receive.envelope import MAX_DEPTH, BadEvent, parse_event, to_delivery
from payhook.testing.samples import load_event


def body_of(event: dict[str, Any]) -> bytes:
    # json.dumps escapes non-ASCII, so a lone surrogate travels as "\ud800", as it would on the wire.
    return json.dumps(event).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_deep_field(depth: int) -> bytes:
    """A real event with one more field, nested `depth` levels (one more inside the envelope)."""
    body = body_of(load_event("payment_intent.succeeded"))
    return body.replace(b'"data": {', b'"deep": %s, "data": {' % nested(depth).encode(), 1)


def refusal(body: bytes) -> tuple[str, str]:
    with pytest.raises(BadEvent) as info:
        parse_event(body)
    return info.value.code, info.value.detail


def test_a_real_event_reads_back_as_sent() -> None:
    event = load_event("payment_intent.succeeded")
    body = body_of(event)
    parsed, text = parse_event(body)
    assert parsed == event and text == body.decode()


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH])
def test_nesting_up_to_the_limit_is_read(depth: int) -> None:
    # The envelope itself is one level: "data" adds depth - 1 more.
    parse_event(with_deep_field(depth - 1))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 969, 100_000])
def test_deeper_nesting_is_invalid_json(depth: int) -> None:
    for body in (nested(depth).encode(), with_deep_field(depth - 1)):
        code, detail = refusal(body)
        assert code == "invalid_json" and str(MAX_DEPTH) in detail


def test_brackets_inside_strings_do_not_count() -> None:
    event = load_event("payment_intent.succeeded", description='[{"\\' + "[" * 500)
    parse_event(body_of(event))


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{}", b"{not json", b'{"object": "event", "id": "e", "type": "t", "x": NaN}', b"-Infinity",
     b'"' + b'\\"[' * 10_000, b"1" * 5000],
    ids=["not-utf8", "not-json", "nan", "infinity", "unterminated-string", "huge-number"],
)  # fmt: skip
def test_what_is_not_json(body: bytes) -> None:
    assert refusal(body)[0] == "invalid_json"


@pytest.mark.parametrize("field", ["id", "type"])
@pytest.mark.parametrize(
    "value",
    ["evt_\ud800", "\udfff", "evt_\x00", "\x00", "", "e" * 256, 7, None, ["evt_1"]],
    ids=["lone-high-surrogate", "lone-low-surrogate", "nul", "only-nul", "empty", "too-long", "number",
         "null", "list"],
)  # fmt: skip
def test_ids_and_types_a_store_cannot_hold_are_not_events(field: str, value: Any) -> None:
    event = load_event("payment_intent.succeeded", **{field: value})
    code, detail = refusal(body_of(event))
    assert (code, detail) == ("not_an_event", f"the event has no valid {field!r}")


def test_a_surrogate_pair_is_an_ordinary_character() -> None:
    event = load_event("payment_intent.succeeded", type="payment_intent.\U0001f600")
    assert b"\\ud83d\\ude00" in body_of(event)
    assert parse_event(body_of(event))[0]["type"] == "payment_intent.\U0001f600"


def delivery_of(**changes: Any) -> Any:
    event, payload = parse_event(body_of(load_event("payment_intent.succeeded", **changes)))
    return to_delivery("t", event, payload, 0, ())


@pytest.mark.parametrize(
    "created",
    [10**20, -(10**13), 10**400, 253402300799, -62135596800, True, 1.5, "1648320033", None],
)
def test_created_outside_what_datetime_and_the_stores_take_is_unset(created: Any) -> None:
    assert delivery_of(created=created).created is None


@pytest.mark.parametrize("created", [0, -1, 1648320033, 253402214399, -62135510400])
def test_created_inside_the_range_is_kept(created: int) -> None:
    assert delivery_of(created=created).created == datetime.fromtimestamp(created, UTC)


@pytest.mark.parametrize("value", ["2020\ud800", "acct_\x00", "x" * 256, 12, ["acct_1"]])
def test_informative_fields_that_do_not_fit_are_unset(value: Any) -> None:
    delivery = delivery_of(api_version=value, account=value, data__object__id=value)
    assert (delivery.api_version, delivery.account, delivery.object_id) == (None, None, None)
    assert delivery.stripe_event_id.startswith("evt_test_")


def test_informative_fields_that_fit_are_kept() -> None:
    delivery = delivery_of(account="acct_\u00e9" + "x" * 249, api_version="v" * 64)
    assert delivery.account == "acct_\u00e9" + "x" * 249 and delivery.api_version == "v" * 64
    assert delivery.object_id is not None and delivery.object_id.startswith("pi_")
