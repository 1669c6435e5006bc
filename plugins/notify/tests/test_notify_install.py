"""The installed distribution is found through its entry point."""

from __future__ import annotations

from importlib.metadata import distribution

from payhook import PluginHost

import payhook_notify


def test_the_distribution_declares_the_plugin() -> None:
    entry_points = {(ep.group, ep.name): ep for ep in distribution("payhook-notify").entry_points}
    assert entry_points["payhook", "notify"].load() is payhook_notify
    assert not any(group == "payhook.migrations" for group, _ in entry_points)  # it keeps no tables


def test_discovery_finds_the_plugin_and_its_handler() -> None:
    host = PluginHost()
    assert "notify" in host.names
    handlers = host.handlers["notify"]
    # Types it has a message for; no "*": payhook narrows them per tenant with `events`.
    assert {handler.name for handler in handlers} == {"payhook_notify.handler.notify"}
    assert {handler.event_type for handler in handlers} == set(payhook_notify.ANNOUNCED)
    assert "*" not in payhook_notify.ANNOUNCED
