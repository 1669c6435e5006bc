"""Thin events at `POST /{tenant}/thin`: verified with the thin secrets, stored once, and
handed to handlers as the SDK's EventNotification on the tenant's client."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import httpx
import pytest
import stripe
from payhook import HandlerContext, hookimpl
from payhook.testing import MakePayhook, PayhookHarness, fresh_event_id, signed_headers, store_backends
from stripe.events import UnknownEventNotification, V1BillingMeterErrorReportTriggeredEventNotification

THIN_SECRET = "whsec_thin_destination_secret"
METER_ERROR = "v1.billing.meter.error_report_triggered"


def thin_event(event_type: str = METER_ERROR, **changes: Any) -> dict[str, Any]:
    """A thin event notification as an event destination posts it (Stripe's documented shape)."""
    event = {
        "id": fresh_event_id().replace("evt_test_", "evt_test_65"),
        "object": "v2.core.event",
        "type": event_type,
        "livemode": False,
        "created": "2026-11-30T09:15:27.123Z",
        "related_object": {
            "id": "mtr_test_61R9IeoQkFyDcPCCP41IL5hXMs1L7kn0",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_test_61R9IeoQkFyDcPCCP41IL5hXMs1L7kn0",
        },
    }
    event.update(changes)
    return event


class ThinPlugin:
    def __init__(self, pattern: str = "v1.billing.meter.*") -> None:
        self.pattern = pattern
        self.got: list[Any] = []
        self.fetched: list[Any] = []
        self.lock = threading.Lock()

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register(self.pattern, self.handle, name="handle")

    def handle(self, event: Any, ctx: HandlerContext) -> None:
        fetched = event.fetch_related_object()
        with self.lock:
            self.got.append(event)
            self.fetched.append(fetched)


def make(make_payhook: MakePayhook, plugin: ThinPlugin, **tenant: Any) -> PayhookHarness:
    body = {
        "plugins": ["thin"],
        "thin_webhook_secrets": [THIN_SECRET],
        "stripe_api_key": "rk_test_thin_key",
        **tenant,
    }
    return make_payhook({"thin": plugin}, tenants={"pycon": body})


def post(harness: PayhookHarness, path: str, event: dict[str, Any], secret: str) -> Any:
    body = json.dumps(event).encode()
    return harness.client.post(path, content=body, headers=signed_headers(body, secret))


@store_backends
def test_a_thin_event_is_stored_once_and_handled_as_the_sdks_notification(
    make_payhook: MakePayhook, stripe_api: Any
) -> None:
    plugin = ThinPlugin()
    harness = make(make_payhook, plugin)
    meter = stripe_api.get("/v1/billing/meters/mtr_test_61R9IeoQkFyDcPCCP41IL5hXMs1L7kn0").mock(
        return_value=httpx.Response(200, json={"id": "mtr_test_61R9", "object": "billing.meter"})
    )
    event = thin_event()
    sent = json.dumps(event).encode()
    response = harness.client.post("/pycon/thin", content=sent, headers=signed_headers(sent, THIN_SECRET))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted", "event": event["id"]}
    again = harness.deliver(event, tenant="pycon", thin=True)  # the test kit's way
    assert again.json()["status"] == "duplicate"

    [stored] = harness.events()
    assert stored.payload == sent.decode()  # the body as received
    assert (stored.type, stored.source, stored.object_id) == (
        METER_ERROR,
        "thin",
        event["related_object"]["id"],
    )
    harness.process()
    [run] = harness.runs()
    assert run.status == "succeeded", run.last_error
    [got] = plugin.got
    assert isinstance(got, V1BillingMeterErrorReportTriggeredEventNotification)
    assert got.id == event["id"]
    assert meter.calls.last.request.headers["authorization"] == "Bearer rk_test_thin_key"
    assert plugin.fetched[0].id == "mtr_test_61R9"


@store_backends
def test_an_unknown_thin_type_is_an_unknown_notification_whose_event_is_fetched_with_the_tenants_key(
    make_payhook: MakePayhook, stripe_api: Any
) -> None:
    plugin = ThinPlugin("acme.widget.*")
    harness = make(make_payhook, plugin)
    # A Connect account's event names it as its context; fetching it sends that context.
    event = thin_event("acme.widget.created", related_object=None, context="acct_1Connected")
    fetched = stripe_api.get(f"/v2/core/events/{event['id']}").mock(
        return_value=httpx.Response(
            200, json={"id": event["id"], "object": "v2.core.event", "type": "acme.widget.created"}
        )
    )
    assert post(harness, "/pycon/thin", event, THIN_SECRET).json()["status"] == "accepted"
    harness.process()
    [got] = plugin.got
    assert type(got) is UnknownEventNotification
    assert plugin.fetched == [None]  # no related object
    full = got.fetch_event()
    assert full.id == event["id"]
    request = fetched.calls.last.request
    assert request.headers["authorization"] == "Bearer rk_test_thin_key"
    assert request.headers["stripe-context"] == "acct_1Connected"


@store_backends
def test_each_route_refuses_the_other_kind_naming_the_right_route(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = make(make_payhook, ThinPlugin())
    snapshot = stripe_event("payment_intent.succeeded")
    # Signed with the right route's secret, posted to the wrong route.
    wrong = post(harness, "/pycon", thin_event(), THIN_SECRET)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "wrong_route" and "/pycon/thin" in wrong.json()["detail"]
    wrong = post(harness, "/pycon/thin", snapshot, harness.secret)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "wrong_route" and "POST it there" in wrong.json()["detail"]
    # Signed with the route's own secret, but of the other kind.
    wrong = post(harness, "/pycon", thin_event(), harness.secret)
    assert wrong.json()["error"] == "wrong_route" and "/pycon/thin" in wrong.json()["detail"]
    wrong = post(harness, "/pycon/thin", snapshot, THIN_SECRET)
    assert wrong.json()["error"] == "wrong_route" and wrong.json()["detail"].endswith("POST it to /pycon")
    # Signed with neither: the usual answer.
    bad = post(harness, "/pycon/thin", thin_event(), "whsec_someone_else")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_signature")
    assert harness.events() == []


@store_backends
def test_a_tenant_without_thin_secrets_answers_404_on_thin(make_payhook: MakePayhook) -> None:
    harness = make_payhook({}, tenants={"plain": {}})
    response = post(harness, "/plain/thin", thin_event(), harness.secret)
    assert response.status_code == 404
    assert response.json()["error"] == "thin_not_enabled"
    assert post(harness, "/nobody/thin", thin_event(), harness.secret).status_code == 404


def test_stripe_can_parse_what_the_fixture_builds() -> None:
    client = stripe.StripeClient("rk_test_x")
    parsed = client.parse_event_notification_without_verification(json.dumps(thin_event()))
    assert parsed.type == METER_ERROR


@store_backends
def test_a_thin_events_run_line_names_its_type(
    make_payhook: MakePayhook, stripe_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The type comes from the stored event's row: a thin event's payload is never parsed
    into a snapshot event, and the line has it all the same."""
    harness = make(make_payhook, ThinPlugin())
    stripe_api.get("/v1/billing/meters/mtr_test_61R9IeoQkFyDcPCCP41IL5hXMs1L7kn0").mock(
        return_value=httpx.Response(200, json={"id": "mtr_test_61R9", "object": "billing.meter"})
    )
    event = thin_event()
    assert post(harness, "/pycon/thin", event, THIN_SECRET).json()["status"] == "accepted"
    caplog.set_level(logging.INFO, logger="payhook.run")
    harness.process()
    [line] = [str(record.msg) for record in caplog.records if record.name == "payhook.run"]
    assert f"event_id={event['id']} event_type={METER_ERROR} plugin=thin handler=handle" in line
    assert "outcome=succeeded" in line
