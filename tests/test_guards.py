"""Per-tenant guards: the livemode a tenant takes, and the API version it expects."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from payhook.testing import MakePayhook, store_backends

from .helpers import RecordingPlugin, create_effect_table

PI_SUCCEEDED = "payment_intent.succeeded"


@store_backends
def test_an_event_of_a_mode_the_tenant_does_not_take_is_stored_ignored_with_its_reason(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = make_payhook(
        {"recording": RecordingPlugin("recording")},
        tenants={"live-only": {"plugins": ["recording"], "livemode": "live"}},
    )
    create_effect_table(harness.store.engine)
    test_event = stripe_event(PI_SUCCEEDED, livemode=False)
    response = harness.deliver(test_event)
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "ignored"
    assert answer["reason"] == "a test event; tenants.live-only.livemode is 'live'"
    assert harness.runs(test_event["id"]) == []
    [stored] = harness.events()
    assert stored.ignored_reason == answer["reason"]
    assert harness.deliver(test_event).json()["status"] == "duplicate"

    [run] = harness.send(stripe_event(PI_SUCCEEDED, livemode=True))
    assert run.status == "succeeded"
    assert harness.events()[-1].ignored_reason is None


@store_backends
def test_an_event_of_another_api_version_is_handled_flagged_and_logged(
    make_payhook: MakePayhook, stripe_event: Any, caplog: pytest.LogCaptureFixture
) -> None:
    harness = make_payhook(
        {"recording": RecordingPlugin("recording")},
        tenants={"pinned": {"plugins": ["recording"], "api_version": "2026-10-28.endive"}},
    )
    create_effect_table(harness.store.engine)
    with caplog.at_level(logging.WARNING, logger="payhook.guards"):
        [run] = harness.send(stripe_event(PI_SUCCEEDED, api_version="2024-06-20"))
    assert run.status == "succeeded"
    assert "tenants.pinned.api_version" in caplog.text
    [flagged] = harness.events()
    assert flagged.api_version_mismatch
    harness.send(stripe_event(PI_SUCCEEDED, api_version="2026-10-28.endive"))
    assert not harness.events()[-1].api_version_mismatch
