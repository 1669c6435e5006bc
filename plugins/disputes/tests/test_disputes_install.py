"""The installed distribution: found through its entry points, its table migrated."""

from __future__ import annotations

from importlib.metadata import distribution

from payhook import PluginHost
from payhook.testing import assert_migrations_match, store_backends

import payhook_disputes


def test_the_distribution_declares_the_plugin_and_its_migrations() -> None:
    entry_points = {(ep.group, ep.name): ep for ep in distribution("payhook-disputes").entry_points}
    assert entry_points["payhook", "disputes"].load() is payhook_disputes
    assert entry_points["payhook.migrations", "disputes"].value == "payhook_disputes.migrations"


def test_discovery_finds_the_plugin_and_its_handlers() -> None:
    host = PluginHost()
    assert "disputes" in host.names
    assert {handler.event_type for handler in host.handlers["disputes"]} == {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
    }


def test_its_hooks_are_declared_at_startup_however_often_it_runs() -> None:
    host = PluginHost({"disputes": payhook_disputes})
    host.hook.startup(host=host)
    host.hook.startup(host=host)  # an app whose lifespan is entered again
    assert host.hook.dispute_opened.spec is not None
    assert host.hook.order_for_charge.spec is not None


@store_backends
def test_the_migration_creates_exactly_the_models_table(payhook_database_url: str) -> None:
    assert_migrations_match("disputes", payhook_database_url)
