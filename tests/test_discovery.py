"""Plugins installed as real distributions, found through the `payhook` entry-point group."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from payhook import ConfigError, PluginHost, create_app
from payhook.testing import build_config

INSTALLED = {ep.name for ep in entry_points(group="payhook")}
pytestmark = pytest.mark.skipif(
    "testplugin" not in INSTALLED,
    reason="tests/payhook_testplugin is not installed (tox installs it: `tox run -e core`)",
)


def test_installed_plugin_is_discovered_and_runs_only_for_tenants_that_enable_it(
    make_payhook: Any, stripe_event: Any
) -> None:
    import payhook_testplugin

    harness = make_payhook(
        tenants={"with-it": {"plugins": ["testplugin"]}, "without-it": {"plugins": []}}, discover=True
    )
    assert "testplugin" in harness.app.payhook.plugins.names
    first, second = stripe_event("payment_intent.succeeded"), stripe_event("payment_intent.succeeded")
    harness.send(first, tenant="with-it")
    assert harness.send(second, tenant="without-it", expect="ignored") == []
    assert ("with-it", first["id"]) in payhook_testplugin.CALLS
    assert all(tenant != "without-it" for tenant, _ in payhook_testplugin.CALLS)


def test_a_plugin_that_fails_to_import_is_reported_by_name_and_spares_the_rest() -> None:
    host = PluginHost()
    assert "testplugin" in host.names
    assert "brokenplugin" not in host.names
    assert "ModuleNotFoundError" in host.load_errors["brokenplugin"]


def test_a_broken_plugin_a_tenant_needs_stops_startup_clearly(tmp_path: Path) -> None:
    config = build_config(f"sqlite:///{tmp_path / 'x.db'}", tenants={"conf": {"plugins": ["brokenplugin"]}})
    with pytest.raises(ConfigError) as info:
        create_app(config)
    [line] = info.value.problems
    assert "tenants.conf.plugins[0]: plugin 'brokenplugin' failed to import (ModuleNotFoundError" in line


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def test_disabled_plugin_is_never_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    code = (
        "import json, sys\n"
        "from payhook.plugins.host import PluginHost\n"
        "host = PluginHost()\n"
        "print(json.dumps({'names': host.names, 'loaded': 'payhook_testplugin' in sys.modules}))\n"
    )
    env = {"PAYHOOK_TESTPLUGIN_IMPORT_MARKER": str(marker)}

    enabled = run_python(code, env)
    assert enabled.returncode == 0, enabled.stderr
    assert json.loads(enabled.stdout)["loaded"] is True and marker.exists()

    marker.unlink()
    disabled = run_python(code, {**env, "PAYHOOK_DISABLED_PLUGINS": "testplugin, brokenplugin"})
    assert disabled.returncode == 0, disabled.stderr
    result = json.loads(disabled.stdout)
    assert "testplugin" not in result["names"] and result["loaded"] is False
    assert not marker.exists()
