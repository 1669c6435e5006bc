"""Whatever a sender puts in a request, the answer is never a 5xx, and only a 200 stores.

A property test drives the real app with generated bodies and headers, signed and not;
example tests pin each hostile input that once made payhook answer 500. Every test runs on
SQLite and on PostgreSQL: NUL, for one, is refused by PostgreSQL only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from payhook.receive.envelope import MAX_DEPTH
from payhook.store.models import Event
from payhook.testing import TEST_SECRET, PayhookHarness, signed_headers, store_backends
from payhook.testing.samples import sample_names
from sqlalchemy import text
from sqlmodel import select

from .helpers import RecordingPlugin

pytestmark = store_backends

LoadEvent = Callable[..., dict[str, Any]]


@pytest.fixture
def harness(make_payhook: Any) -> PayhookHarness:
    return make_payhook({"rec": RecordingPlugin("rec")}, ingest={"max_body_bytes": 256 * 1024})


def stored_rows(harness: PayhookHarness) -> tuple[int, int]:
    with harness.store.engine.connect() as conn:
        events = conn.execute(text("SELECT count(*) FROM payhook_event")).scalar_one()
        runs = conn.execute(text("SELECT count(*) FROM payhook_handler_run")).scalar_one()
    return events, runs


def stored_event(harness: PayhookHarness, stripe_event_id: str) -> Event:
    """The row for `stripe_event_id`, read back through the ORM as an operator would."""
    with harness.session() as session:
        return session.exec(select(Event).where(Event.stripe_event_id == stripe_event_id)).one()


def assert_refused(response: Any, code: str | tuple[str, ...]) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ((code,) if isinstance(code, str) else code)


def deliver_raw(harness: PayhookHarness, body: bytes) -> Any:
    """POST `body` signed with the tenant's secret, exactly as given."""
    return harness.client.post(f"/{harness.tenant}", content=body, headers=signed_headers(body))


# -- the property ------------------------------------------------------------------------

unstorable_strings = st.one_of(
    st.sampled_from(["evt_\ud800", "\udfff", "evt_\x00", "\x00", "", "e" * 256, "\ud83d\ude00"]),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
    st.text(st.characters(codec="utf-8") | st.just("\x00"), max_size=8),
)
hostile_numbers = st.one_of(
    st.sampled_from([10**20, -(10**13), 10**400, 2**63, -(2**63) - 1, 253402300800, -62135596801]),
    st.integers(),
    st.floats(),
)
hostile_values = st.one_of(
    unstorable_strings,
    st.text(max_size=20),
    hostile_numbers,
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ENVELOPE_FIELDS = ["id", "type", "created", "api_version", "account", "livemode", "object", "data"]
hostile_headers = st.one_of(
    st.just("t=1" + "0" * 399 + ",v1=00"),
    st.integers(-(10**500), 10**500).map(lambda t: f"t={t},v1=00"),
    st.integers(1, 10**5).map(lambda n: "t=" + "9" * n + ",v1=00"),
    st.text(st.characters(codec="latin-1"), max_size=100),
    st.tuples(
        st.lists(st.sampled_from(["t=1", "v1=00", "t", "v1", "=", ",", " "]), max_size=5),
        st.integers(1, 3000),
    ).map(lambda items_and_copies: ",".join(items_and_copies[0] * items_and_copies[1])),
)


SAMPLES = sample_names()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@st.composite
def real_events(draw: st.DrawFn, load_event: LoadEvent) -> bytes:
    """A shipped Stripe event (fresh id) with a few envelope fields made hostile."""
    # payment_intent.succeeded is the type the test plugin handles: "accepted", with runs.
    event = load_event(draw(st.sampled_from(["payment_intent.succeeded"] * len(SAMPLES) + SAMPLES)))
    if draw(st.integers(0, 9)) == 0:
        event["id"] = "evt_test_sent_again"  # a redelivery: "duplicate"
    for field in draw(st.lists(st.sampled_from(ENVELOPE_FIELDS), max_size=2, unique=True)):
        event[field] = draw(hostile_values)
    if draw(st.booleans()) and isinstance(event.get("data"), dict):
        event["data"]["object"] = {"id": draw(hostile_values)}
    if draw(st.integers(0, 4)) == 0:
        event["deep"] = nested_list(draw(st.integers(1, MAX_DEPTH + 2)))
    if draw(st.integers(0, 4)) == 0:
        # Raw surrogates in the bytes (not JSON escapes): not UTF-8, so not JSON either.
        return json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(event).encode()


def bodies(load_event: LoadEvent) -> st.SearchStrategy[bytes]:
    return st.one_of(
        real_events(load_event),
        real_events(load_event),
        st.integers(0, 3000).map(nested),
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
            ),
        ).map(lambda value: json.dumps(value).encode()),
    )


@settings(
    max_examples=150,
    deadline=None,
    # One app and store serve every example; each compares the rows before and after its request.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_request_gets_a_5xx_and_only_a_200_stores(
    harness: PayhookHarness, stripe_event: LoadEvent, data: st.DataObject
) -> None:
    body = data.draw(bodies(stripe_event), label="body")
    signing = data.draw(st.sampled_from(["signed", "signed", "signed at", "none", "hostile"]), label="how")
    content_type = data.draw(st.sampled_from(["application/json", "text/plain", ""]), label="type")
    headers: dict[str, Any] = {"Content-Type": content_type}
    if signing == "signed":
        headers.update(signed_headers(body))
    elif signing == "signed at":
        timestamp = data.draw(st.integers(-(10**30), 10**30) | st.just(int(time.time())), label="t")
        headers.update(signed_headers(body, TEST_SECRET, timestamp))
    elif signing == "hostile":
        # Header bytes arrive as latin-1 text; as bytes, the client sends them untouched.
        headers["Stripe-Signature"] = data.draw(hostile_headers, label="header").encode("latin-1")
    tenant = data.draw(st.sampled_from([harness.tenant] * 5 + ["nobody"]), label="tenant")

    before = stored_rows(harness)
    response = harness.client.post(f"/{tenant}", content=body, headers=headers)
    assert response.status_code < 500, response.text
    event(f"{response.status_code} {response.json().get('error') or response.json().get('status')}")
    if response.status_code != 200:
        assert stored_rows(harness) == before
        return
    answer = response.json()
    assert answer["status"] in {"accepted", "ignored", "duplicate"}
    row = stored_event(harness, answer["event"])  # readable back, whatever `created` was
    if answer["status"] != "duplicate":
        assert row.payload == body.decode()


# -- each input that once answered 500 ---------------------------------------------------


def test_a_huge_timestamp_is_a_400_with_one_log_line_at_most(
    harness: PayhookHarness, stripe_event: LoadEvent, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(stripe_event("payment_intent.succeeded")).encode()
    headers: dict[str, Any] = {"Stripe-Signature": "t=1" + "0" * 399 + ",v1=00"}  # no secret needed
    with caplog.at_level(logging.INFO):
        response = harness.client.post(f"/{harness.tenant}", content=body, headers=headers)
    assert_refused(response, ("malformed_signature", "future_timestamp"))
    lines = [
        line
        for record in caplog.records
        if not record.name.startswith("httpx")  # the test client's own request log
        for line in caplog.handler.format(record).splitlines()
    ]
    assert len(lines) <= 1, lines
    assert stored_rows(harness) == (0, 0)


@pytest.mark.parametrize("depth", [969, 5000])
def test_deep_nesting_is_invalid_json(harness: PayhookHarness, stripe_event: LoadEvent, depth: int) -> None:
    event = json.dumps(stripe_event("payment_intent.succeeded", deep=[])).encode()
    inside = event.replace(b'"deep": []', b'"deep": ' + nested(depth), 1)
    for body in (nested(depth), inside):
        assert_refused(deliver_raw(harness, body), "invalid_json")
    assert stored_rows(harness) == (0, 0)


@pytest.mark.parametrize("field", ["id", "type"])
@pytest.mark.parametrize(
    "value", ["evt_\ud800", "\udc00", "evt_\x00", "\x00"], ids=["high", "low", "nul", "only-nul"]
)
def test_ids_and_types_no_store_can_hold_are_not_events(
    harness: PayhookHarness, stripe_event: LoadEvent, field: str, value: str
) -> None:
    body = json.dumps(stripe_event("payment_intent.succeeded", **{field: value})).encode()
    assert b"\\u" in body  # sent as a JSON escape, as a sender would
    assert_refused(deliver_raw(harness, body), "not_an_event")
    assert stored_rows(harness) == (0, 0)


@pytest.mark.parametrize(
    "created", [10**20, -(10**13), 10**400, True, 1.5e300], ids=["1e20", "-1e13", "1e400", "true", "float"]
)
def test_created_out_of_range_is_stored_unset(
    harness: PayhookHarness, stripe_event: LoadEvent, created: Any
) -> None:
    event = stripe_event("payment_intent.succeeded", created=created)
    response = harness.deliver(event)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted", "event": event["id"]}
    assert stored_event(harness, event["id"]).created is None


@pytest.mark.parametrize("value", ["2020-08-27\ud800", "acct_\x00", "x" * 256])
def test_informative_fields_no_store_can_hold_are_stored_unset(
    harness: PayhookHarness, stripe_event: LoadEvent, value: str
) -> None:
    event = stripe_event("payment_intent.succeeded", api_version=value, account=value, data__object__id=value)
    response = harness.deliver(event)
    assert response.json() == {"status": "accepted", "event": event["id"]}
    row = stored_event(harness, event["id"])
    assert (row.api_version, row.account, row.object_id) == (None, None, None)
    assert json.loads(row.payload) == event  # the payload itself is kept as sent


def test_the_extremes_of_created_round_trip(harness: PayhookHarness, stripe_event: LoadEvent) -> None:
    for created in (-62135510400, 253402214399):  # 0001-01-02 and 9999-12-30 UTC
        event = stripe_event("payment_intent.succeeded", created=created)
        assert harness.deliver(event).status_code == 200
        row = stored_event(harness, event["id"])
        assert row.created is not None and int(row.created.timestamp()) == created
