"""payhook.Event: a stripe.Event whose `data` is built on first read, and reads the same."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import payhook
import pytest
import stripe


def both(stripe_event: Any, name: str) -> tuple[payhook.Event, stripe.Event]:
    text = json.dumps(stripe_event(name))
    return payhook.Event.construct_from(json.loads(text), None), stripe.Event.construct_from(
        json.loads(text), None
    )


@pytest.mark.parametrize("name", ["payment_intent.succeeded", "charge.refunded.full", "invoice.paid"])
def test_reads_like_the_sdks_event(stripe_event: Any, name: str) -> None:
    ours, sdks = both(stripe_event, name)
    assert isinstance(ours, stripe.Event)
    assert ours.id == sdks.id and ours.type == sdks.type and ours.created == sdks.created
    assert type(ours.data.object) is type(sdks.data.object)
    assert ours.data.object.id == sdks.data.object.id
    assert ours["data"]["object"]["id"] == sdks["data"]["object"]["id"]
    assert ours.to_dict() == sdks.to_dict()
    assert str(ours) == str(sdks)


def test_data_is_built_once_on_first_read(stripe_event: Any) -> None:
    ours, _ = both(stripe_event, "payment_intent.succeeded")
    first = ours.data
    assert ours.data is first
    assert ours.data.object is first.object


def test_copies_pickles_and_equality(stripe_event: Any) -> None:
    ours, _ = both(stripe_event, "payment_intent.succeeded")
    again, _ = both(stripe_event, "payment_intent.succeeded")
    again_with_same_id = payhook.Event.construct_from(json.loads(json.dumps(ours.to_dict())), None)
    assert ours == again_with_same_id
    assert ours != again  # another event id
    assert copy.deepcopy(ours).data.object.id == ours.data.object.id
    assert pickle.loads(pickle.dumps(ours)).data.object.amount == ours.data.object.amount


def test_payload_is_the_parsed_json_without_building_stripe_objects(stripe_event: Any) -> None:
    ours, sdks = both(stripe_event, "payment_intent.succeeded")
    payload = ours.payload
    assert isinstance(payload["data"]["object"], dict)
    assert payload["data"]["object"] == sdks.data.object.to_dict()
    assert ours.payload is not payload  # each caller gets its own top level


def test_from_payload_builds_the_same_event_and_leaves_every_object_until_read(stripe_event: Any) -> None:
    values = stripe_event("payment_intent.succeeded")
    ours = payhook.Event.from_payload(json.loads(json.dumps(values)))
    sdks = stripe.Event.construct_from(json.loads(json.dumps(values)), None)
    # Nothing but the envelope's plain values is converted before a handler reads it.
    assert set(ours._data._raw) == {key for key, value in values.items() if isinstance(value, dict)}
    assert ours.request.id == sdks.request.id and type(ours.request) is type(sdks.request)
    assert ours.data.object.id == sdks.data.object.id
    assert ours.to_dict() == sdks.to_dict()
