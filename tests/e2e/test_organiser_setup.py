"""The organiser setup in docs/organiser-setup.md is a configuration payhook accepts."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from payhook import Config, PluginHost

PAGE = Path(__file__).resolve().parents[2] / "docs" / "organiser-setup.md"
BUNDLED = {"registration", "disputes", "notify"}
pytestmark = pytest.mark.skipif(
    not {ep.name for ep in entry_points(group="payhook")} >= BUNDLED,
    reason="the bundled plugins are not installed (tox installs them: `tox run -e core`)",
)


def blocks(language: str) -> list[str]:
    return re.findall(
        rf"^```{language}\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
    )


def documented_config() -> dict[str, Any]:
    [config] = [block for block in blocks("toml") if "[tenants." in block]
    return tomllib.loads(config)


def documented_environment() -> dict[str, str]:
    """The secrets file of step 2, with made-up values."""
    [secrets] = [block for block in blocks("sh") if "_WHSEC=" in block]
    names = re.findall(r"^([A-Z0-9_]+)=", secrets, re.MULTILINE)
    return {name: f"https://chat.example.test/{name}" if "URL" in name else f"whsec_{name}" for name in names}


def test_the_documented_configuration_is_valid_with_the_bundled_plugins() -> None:
    config = Config.from_mapping(
        documented_config(), source="organiser-setup.md", environ=documented_environment()
    )
    PluginHost().check_config(config)  # raises ConfigError naming any unusable plugin

    assert {slug: tenant.plugins for slug, tenant in config.tenants.items()} == {
        "pycon-2027": ("registration", "disputes", "notify"),
        "djangocon-2027": ("registration", "notify"),
        "merch": ("disputes",),
    }


def test_every_referenced_secret_is_in_the_secrets_file() -> None:
    referenced = set(re.findall(r'"\$env" = "([A-Z0-9_]+)"', "".join(blocks("toml"))))
    assert referenced == set(documented_environment())


def test_the_notify_settings_are_valid() -> None:
    config = Config.from_mapping(documented_config(), environ=documented_environment())
    host = PluginHost()
    host.check_config(config)  # every plugin's settings, as `payhook serve` checks them
    for tenant in config.tenants.values():
        if "notify" in tenant.plugins:
            settings = host.settings_for(tenant, "notify")  # payhook resolved its { "$env" = ... }
            assert settings.url.startswith("https://")


def test_every_tenant_has_a_stripe_endpoint_row() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for slug in documented_config()["tenants"]:
        assert f"| `{slug}` | `https://hooks.example.org/{slug}` |" in page
