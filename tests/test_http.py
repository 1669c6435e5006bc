"""Every row of the HTTP contract (DESIGN §2), with real signatures, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest
from payhook.testing import PayhookHarness, signed_headers, store_backends

from .helpers import RecordingPlugin

pytestmark = store_backends


@pytest.fixture
def harness(make_payhook: Any) -> PayhookHarness:
    return make_payhook(
        {"rec": RecordingPlugin("rec")},
        tenants={
            "conf": {"plugins": ["rec"], "webhook_secrets": ["whsec_current", "whsec_previous"]},
            "closed": {"plugins": ["rec"], "active": False},
        },
        ingest={"max_body_bytes": 64 * 1024},
    )


def assert_nothing_stored(harness: PayhookHarness) -> None:
    assert harness.events() == []
    assert harness.runs() == []


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert body["detail"]
    assert "whsec" not in response.text


def test_valid_new_event_is_stored_before_the_answer(harness: PayhookHarness, stripe_event: Any) -> None:
    event = stripe_event("payment_intent.succeeded")
    response = harness.deliver(event, secret="whsec_current", tenant="conf")
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "event": event["id"]}
    [stored] = harness.events()
    assert (stored.tenant, stored.stripe_event_id, stored.type) == ("conf", event["id"], event["type"])
    assert json.loads(stored.payload) == event
    assert stored.secret_index == 0
    assert stored.object_id == event["data"]["object"]["id"]
    assert stored.created is not None and int(stored.created.timestamp()) == event["created"]
    assert stored.api_version == "2020-08-27" and stored.livemode is False
    [run] = harness.runs()
    assert (run.plugin, run.handler, run.status, run.attempts) == ("rec", "apply", "pending", 0)


def test_redelivery_is_a_duplicate(harness: PayhookHarness, stripe_event: Any) -> None:
    event = stripe_event("payment_intent.succeeded")
    harness.deliver(event, secret="whsec_current", tenant="conf")
    again = harness.deliver(event, secret="whsec_previous", tenant="conf")
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event": event["id"]}
    assert len(harness.events()) == 1 and len(harness.runs()) == 1


def test_type_no_plugin_handles_is_ignored_but_stored(harness: PayhookHarness, stripe_event: Any) -> None:
    event = stripe_event("customer.created")
    response = harness.deliver(event, secret="whsec_current", tenant="conf")
    assert response.json() == {"status": "ignored", "event": event["id"]}
    assert [e.stripe_event_id for e in harness.events()] == [event["id"]]
    assert harness.runs() == []


def test_second_secret_is_accepted_and_recorded(harness: PayhookHarness, stripe_event: Any) -> None:
    harness.deliver(stripe_event("payment_intent.succeeded"), secret="whsec_previous", tenant="conf")
    assert harness.events()[0].secret_index == 1


def test_several_v1_values_one_valid(harness: PayhookHarness, stripe_event: Any) -> None:
    body = json.dumps(stripe_event("payment_intent.succeeded")).encode()
    header = signed_headers(body, "whsec_previous")["Stripe-Signature"]
    t, v1 = header.split(",")
    mixed = f"{t},v1={'0' * 64},{v1},v0={'1' * 64}"
    response = harness.client.post("/conf", content=body, headers={"Stripe-Signature": mixed})
    assert response.json()["status"] == "accepted"


@pytest.mark.parametrize(
    ("secret", "age", "code"),
    [
        ("whsec_wrong", 0, "invalid_signature"),
        ("whsec_current", 301, "stale_timestamp"),
        ("whsec_current", -301, "future_timestamp"),
    ],
)
def test_bad_signatures_store_nothing(
    harness: PayhookHarness, stripe_event: Any, secret: str, age: int, code: str
) -> None:
    response = harness.deliver(
        stripe_event("payment_intent.succeeded"),
        secret=secret,
        tenant="conf",
        timestamp=int(time.time()) - age,
    )
    assert_error(response, 400, code)
    assert_nothing_stored(harness)


def test_missing_header(harness: PayhookHarness, stripe_event: Any) -> None:
    body = json.dumps(stripe_event("payment_intent.succeeded")).encode()
    assert_error(harness.client.post("/conf", content=body), 400, "missing_signature")
    assert_nothing_stored(harness)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b'["an", "array"]', "not_an_event"),
        (b'{"id": "evt_1", "type": "x"}', "not_an_event"),
        (b'{"object": "event", "type": "x"}', "not_an_event"),
        (b'{"object": "event", "id": "evt_1", "type": 7}', "not_an_event"),
        (b'{"object": "event", "id": "' + b"e" * 300 + b'", "type": "x"}', "not_an_event"),
    ],
)
def test_signed_bodies_that_are_not_events(harness: PayhookHarness, body: bytes, code: str) -> None:
    response = harness.client.post("/conf", content=body, headers=signed_headers(body, "whsec_current"))
    assert_error(response, 400, code)
    assert_nothing_stored(harness)


def test_unknown_and_inactive_tenants(harness: PayhookHarness, stripe_event: Any) -> None:
    event = stripe_event("payment_intent.succeeded")
    assert_error(harness.deliver(event, tenant="nobody"), 404, "unknown_tenant")
    assert_error(harness.deliver(event, tenant="closed"), 404, "unknown_tenant")
    assert_nothing_stored(harness)


def test_oversize_body(harness: PayhookHarness, stripe_event: Any) -> None:
    event = stripe_event("payment_intent.succeeded", padding="x" * (64 * 1024))
    assert_error(harness.deliver(event, secret="whsec_current", tenant="conf"), 413, "body_too_large")

    def chunks() -> Any:  # no Content-Length: the limit holds while streaming
        for _ in range(100):
            yield b"x" * 1024

    response = harness.client.post("/conf", content=chunks(), headers={"Stripe-Signature": "t=1,v1=00"})
    assert_error(response, 413, "body_too_large")
    assert_nothing_stored(harness)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_a_tenant_get_json_405_with_allow(harness: PayhookHarness, method: str) -> None:
    response = harness.client.request(method, "/conf")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_post_on_healthz_gets_json_405_with_allow(harness: PayhookHarness) -> None:
    response = harness.client.post("/healthz")
    assert_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "HEAD"}


@pytest.mark.parametrize("path", ["/", "/conf/events", "/healthz/", "/a/b/c"])
def test_unknown_paths_get_json_404(harness: PayhookHarness, path: str) -> None:
    assert_error(harness.client.post(path), 404, "not_found")
    assert_error(harness.client.get(path), 404, "not_found")


def test_trailing_slash_is_not_redirected_anywhere(harness: PayhookHarness, stripe_event: Any) -> None:
    body = json.dumps(stripe_event("payment_intent.succeeded")).encode()
    response = harness.client.post(
        "/conf/",
        content=body,
        headers={**signed_headers(body, "whsec_current"), "Host": "evil.example"},
        follow_redirects=False,
    )
    assert_error(response, 404, "not_found")
    assert "location" not in response.headers
    assert "evil.example" not in response.text
    assert_nothing_stored(harness)


def test_a_long_tenant_name_is_not_echoed_whole(harness: PayhookHarness, stripe_event: Any) -> None:
    name = "t" * 10_000
    response = harness.deliver(stripe_event("payment_intent.succeeded"), tenant=name)
    assert_error(response, 404, "unknown_tenant")
    detail = response.json()["detail"]
    assert "t" * 64 + "\u2026" in detail and "t" * 65 not in detail
    assert len(response.content) < 300


def test_healthz(harness: PayhookHarness) -> None:
    response = harness.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_store_down_answers_503_never_200(make_payhook: Any, payhook_backend: str, stripe_event: Any) -> None:
    if payhook_backend == "sqlite":
        harness = make_payhook({"rec": RecordingPlugin("rec")}, database={"busy_timeout_ms": 100})
        path = harness.config.database.url.removeprefix("sqlite:///")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            response = harness.deliver(stripe_event("payment_intent.succeeded"))
            assert_error(response, 503, "store_unavailable")
            assert_error(harness.client.get("/healthz"), 503, "store_unavailable")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert_nothing_stored(harness)
        # ...and it recovers by itself once the store is back.
        assert harness.deliver(stripe_event("payment_intent.succeeded")).json()["status"] == "accepted"
    else:
        from payhook import create_app
        from payhook.testing import build_config
        from starlette.testclient import TestClient

        config = build_config(
            "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
            plugins={"rec": None},
            database={"connect_timeout": 1},
        )
        with TestClient(create_app(config, {"rec": RecordingPlugin("rec")})) as client:
            body = json.dumps(stripe_event("payment_intent.succeeded")).encode()
            assert_error(
                client.post("/test", content=body, headers=signed_headers(body)), 503, "store_unavailable"
            )
            assert_error(client.get("/healthz"), 503, "store_unavailable")
