"""Notifications through signed deliveries; the chat service is a respx mock."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from notify_testkit import HOOK_URL, TENANT
from payhook import ConfigError
from payhook.testing import MakePayhook, PayhookHarness, store_backends

import payhook_notify

pytestmark = store_backends

Events = Callable[..., dict[str, Any]]


def posted_text(route: respx.Route) -> str:
    body = json.loads(route.calls.last.request.content)
    assert set(body) == {"text"}
    return str(body["text"])


def test_a_listed_event_is_posted_as_slack_text(
    make_notifier: Callable[..., PayhookHarness], chat: respx.MockRouter, stripe_event: Events
) -> None:
    route = chat.post(HOOK_URL).respond(200, text="ok")
    harness = make_notifier(events=["charge.dispute.created"])
    event = stripe_event("charge.dispute.created")

    [run] = harness.send(event)
    assert run.status == "succeeded"
    assert posted_text(route) == (
        f"[{TENANT}] Dispute opened: 1.00 USD on ch_000000000000000000000000, reason fraudulent, "
        f"status warning_needs_response, evidence due 2022-04-04 ({event['id']})"
    )


def test_a_failed_payment_names_amount_reason_and_order(
    make_notifier: Callable[..., PayhookHarness], chat: respx.MockRouter, stripe_event: Events
) -> None:
    route = chat.post(HOOK_URL).respond(204)
    harness = make_notifier()  # the defaults: new disputes and failed payments
    event = stripe_event(
        "payment_intent.payment_failed",
        data__object__metadata={"order_id": "7"},
        data__object__currency="jpy",
    )

    [run] = harness.send(event)
    assert run.status == "succeeded"
    assert posted_text(route) == (
        f"[{TENANT}] Payment failed: 2000 JPY (pi_000000000000000000000000): "
        f"Your card was declined. [order 7] ({event['id']})"
    )


def test_unlisted_events_get_no_run_and_post_nothing(
    make_notifier: Callable[..., PayhookHarness], chat: respx.MockRouter, stripe_event: Events
) -> None:
    harness = make_notifier(events=["charge.dispute.*"])
    # payhook filters by the tenant's `events` when the event arrives: no notify run at all.
    assert harness.send(stripe_event("payment_intent.succeeded"), expect="ignored") == []
    assert not chat.calls


def test_patterns_match_event_families(
    make_notifier: Callable[..., PayhookHarness], chat: respx.MockRouter, stripe_event: Events
) -> None:
    route = chat.post(HOOK_URL).respond(200)
    harness = make_notifier(events=["charge.dispute.*"])
    event = stripe_event("charge.dispute.created", type="charge.dispute.closed", data__object__status="lost")

    harness.send(event)
    assert posted_text(route).startswith(f"[{TENANT}] Dispute closed: 1.00 USD on ch_")


def test_an_error_answer_fails_the_run_and_the_retry_posts_again(
    make_notifier: Callable[..., PayhookHarness], chat: respx.MockRouter, stripe_event: Events
) -> None:
    route = chat.post(HOOK_URL).mock(side_effect=[httpx.Response(500), httpx.Response(200)])
    harness = make_notifier(events=["charge.refunded"])
    event = stripe_event("charge.refunded.full")

    [run] = harness.send(event)
    assert run.status == "failed"
    assert run.last_error == "hooks.slack.test answered 500"
    assert "not-a-real-secret" not in (run.last_error or "") + (run.last_traceback or "")

    harness.process(include_scheduled=True)
    assert [r.status for r in harness.runs(event["id"])] == ["succeeded"]
    assert route.call_count == 2
    assert posted_text(route).startswith(f"[{TENANT}] Refund: 1.00 USD of 1.00 USD refunded on ch_")


@pytest.mark.parametrize("error", [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("no route")])
def test_a_timeout_fails_the_run(
    make_notifier: Callable[..., PayhookHarness],
    chat: respx.MockRouter,
    stripe_event: Events,
    error: Exception,
) -> None:
    route = chat.post(HOOK_URL).mock(side_effect=error)
    harness = make_notifier(events=["charge.dispute.created"], timeout=2.5)
    event = stripe_event("charge.dispute.created")

    [run] = harness.send(event)
    assert run.status == "failed"
    assert run.last_error == "hooks.slack.test did not answer within 2.5 s"
    assert route.calls.last.request.extensions["timeout"] == {
        "connect": 2.5,
        "read": 2.5,
        "write": 2.5,
        "pool": 2.5,
    }


def test_a_redelivered_event_is_not_posted_twice(
    make_notifier: Callable[..., PayhookHarness], chat: respx.MockRouter, stripe_event: Events
) -> None:
    route = chat.post(HOOK_URL).respond(200)
    harness = make_notifier(events=["charge.dispute.created"])
    event = stripe_event("charge.dispute.created")
    harness.send(event)

    harness.send(event, expect="duplicate")
    assert route.call_count == 1


def test_the_url_can_come_from_the_environment(
    make_notifier: Callable[..., PayhookHarness],
    chat: respx.MockRouter,
    stripe_event: Events,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYCON_SLACK_URL", "https://chat.example.test/hook")
    route = chat.post("https://chat.example.test/hook").respond(200)
    harness = make_notifier(url={"$env": "PYCON_SLACK_URL"}, events=["charge.dispute.created"])

    # payhook's configuration resolved it; the plugin sees the URL itself.
    assert harness.config.tenants[TENANT].config_for("notify")["url"] == "https://chat.example.test/hook"
    [run] = harness.send(stripe_event("charge.dispute.created"))
    assert run.status == "succeeded"
    assert route.called


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_or_empty_environment_variable_stops_payhook_at_start(
    make_notifier: Callable[..., PayhookHarness], monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_UNSET_VARIABLE", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_UNSET_VARIABLE", value)
    with pytest.raises(ConfigError) as raised:
        make_notifier(url={"$env": "NOTIFY_UNSET_VARIABLE"})
    [problem] = raised.value.problems
    assert problem.endswith(
        f"tenants.{TENANT}.plugin_config.notify.url: environment variable NOTIFY_UNSET_VARIABLE is not set "
        "or empty; export it"
    )


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"url": "ftp://example.test"}, "notify.url: must be an http(s) URL"),
        ({"url": 5}, "notify.url: must be str, got 5"),
        ({"events": "charge.dispute.created"}, "notify.events: must be a list of event types"),
        ({"events": ["charge.dispute.created", ""]}, "notify.events[1]: must be an event type, got ''"),
        ({"events": ["customer.created"]}, "notify.events[0]: plugin 'notify' has no handler for"),
        ({"timeout": 0}, "notify.timeout: must be seconds, greater than 0, got 0.0"),
        ({"timeout": "5"}, "notify.timeout: must be float, got '5'"),
        ({"channel": "#ops"}, "notify.channel: unknown key; expected one of events, timeout, url"),
    ],
)
def test_a_configuration_mistake_stops_payhook_at_start_with_what_to_fix(
    make_notifier: Callable[..., PayhookHarness], settings: dict[str, Any], error: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_notifier(**settings)
    [problem] = raised.value.problems
    assert problem.startswith(f"<test config>: tenants.{TENANT}.plugin_config.{error}")


def test_every_mistake_is_reported_at_once(make_notifier: Callable[..., PayhookHarness]) -> None:
    with pytest.raises(ConfigError) as raised:
        make_notifier(url=5, timeout=-1, channel="#ops")
    where = f"<test config>: tenants.{TENANT}.plugin_config.notify"
    assert raised.value.problems == [
        f"{where}.channel: unknown key; expected one of events, timeout, url",
        f"{where}.url: must be str, got 5",
    ]


def test_a_tenant_without_a_url_cannot_start(make_payhook: MakePayhook) -> None:
    with pytest.raises(ConfigError) as raised:
        make_payhook({"notify": payhook_notify}, tenants={TENANT: {"plugins": ["notify"]}})
    assert raised.value.problems == [
        f"<test config>: tenants.{TENANT}.plugin_config.notify.url: missing; this setting has no default"
    ]


def test_handlers_get_the_settings_payhook_read(
    make_notifier: Callable[..., PayhookHarness], chat: respx.MockRouter, stripe_event: Events
) -> None:
    route = chat.post(HOOK_URL).respond(200)
    harness = make_notifier(events=["charge.refunded"], timeout=3)
    [run] = harness.send(stripe_event("charge.refunded.full"))
    assert run.status == "succeeded"
    assert route.calls.last.request.extensions["timeout"]["read"] == 3.0
