"""Configuration: the documented shape loads; each mistake gets one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
from payhook import ConfigError, create_app, load_config
from payhook.config import Config
from payhook.plugins import PluginHost

from .helpers import RecordingPlugin

DESIGN_EXAMPLE = """
[database]
url = "sqlite:///payhook.db"

[processing]
mode = "queued"
max_attempts = 8

[tenants.pycon-2027]
webhook_secrets = [{ "$env" = "PYCON_2027_WHSEC" }, "whsec_old_until_roll_ends"]
plugins = ["registration", "disputes"]
active = true

[tenants.pycon-2027.plugin_config.registration]
currency = "usd"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payhook.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ=environ or {})
    return info.value.problems


def test_design_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_EXAMPLE), environ={"PYCON_2027_WHSEC": "whsec_new"})
    tenant = config.tenants["pycon-2027"]
    assert tenant.webhook_secrets == ("whsec_new", "whsec_old_until_roll_ends")
    assert tenant.plugins == ("registration", "disputes")
    assert tenant.config_for("registration") == {"currency": "usd"}
    assert config.processing.retry.max_attempts == 8
    # Relative SQLite paths are taken relative to the config file.
    assert config.database.url == f"sqlite:///{tmp_path.resolve() / 'payhook.db'}"
    assert "whsec" not in repr(tenant)


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[tenants.a]\nwebhook_secrets = ["whsec_a"]\n'), environ={})
    assert config.processing.mode == "queued"
    assert config.ingest.max_body_bytes == 1024 * 1024
    assert config.ingest.signature_tolerance == 300
    assert config.database.sqlite_synchronous == "normal"
    assert config.tenants["a"].active is True


def test_missing_env_secret_names_file_key_and_fix(tmp_path: Path) -> None:
    [line] = problems(tmp_path, DESIGN_EXAMPLE)
    assert line.startswith(f"{tmp_path / 'payhook.toml'}: tenants.pycon-2027.webhook_secrets[0]:")
    assert "PYCON_2027_WHSEC" in line and "export it" in line


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[tenants.a]\nwebhook_secrets = []\n", "tenants.a.webhook_secrets", "non-empty list"),
        ("[tenants.a]\nplugins = []\n", "tenants.a.webhook_secrets", "missing"),
        ('[tenants.A_B]\nwebhook_secrets = ["x"]\n', "tenants.A_B", "bad tenant slug"),
        ('[tenants.healthz]\nwebhook_secrets = ["x"]\n', "tenants.healthz", "bad tenant slug"),
        ('[tenants.a]\nwebhook_secrets = ["x"]\nsecrets = 1\n', "tenants.a.secrets", "unknown key"),
        ('[databse]\nurl = "x"\n', "databse", "unknown key"),
        ('[processing]\nmode = "eventually"\n', "processing.mode", '"queued" or "inline"'),
        ("[processing]\nmax_attempts = 0\n", "processing.max_attempts", "greater than 0"),
        ('[processing]\nmax_attempts = "3"\n', "processing.max_attempts", "must be int"),
        ('[database]\nurl = "mysql://x"\n', "database.url", "sqlite://"),
        (
            '[tenants.a]\nwebhook_secrets = [{ "$env" = "A", "x" = 1 }]\n',
            "tenants.a.webhook_secrets[0]",
            "$env",
        ),
        (
            '[tenants.a]\nwebhook_secrets = ["x"]\n[tenants.a.plugin_config.reg]\ncurrency = "usd"\n',
            "tenants.a.plugin_config.reg",
            "not in tenants.a.plugins",
        ),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, key: str, words: str) -> None:
    lines = problems(tmp_path, text)
    assert any(f": {key}: " in line and words in line for line in lines), lines
    assert all("\n" not in line for line in lines)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = '[processing]\nmode = "x"\nmax_attempts = -1\n[tenants.a]\nwebhook_secrets = []\n'
    assert len(problems(tmp_path, text)) == 3


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in problems(tmp_path, "[tenants\n")[0]
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_unknown_plugin_fails_startup_with_the_fix(tmp_path: Path) -> None:
    config = Config.from_mapping(
        {"tenants": {"a": {"webhook_secrets": ["x"], "plugins": ["registraton"]}}}, source="site.toml"
    )
    with pytest.raises(ConfigError) as info:
        create_app(config, {"registration": RecordingPlugin("registration")})
    [line] = info.value.problems
    assert line.startswith("site.toml: tenants.a.plugins[0]: unknown plugin 'registraton'")
    assert "installed: registration" in line and "pip install payhook-registraton" in line


def test_disabled_plugin_needed_by_a_tenant_fails_startup() -> None:
    config = Config.from_mapping({"tenants": {"a": {"webhook_secrets": ["x"], "plugins": ["rec"]}}})
    host = PluginHost({"rec": RecordingPlugin("rec")}, disabled={"rec"})
    with pytest.raises(ConfigError, match="disabled by PAYHOOK_DISABLED_PLUGINS"):
        host.check_config(config)


def test_plugin_settings_may_come_from_the_environment(tmp_path: Path) -> None:
    text = (
        '[tenants.a]\nwebhook_secrets = ["x"]\nplugins = ["notify"]\n'
        '[tenants.a.plugin_config.notify]\nurl = { "$env" = "SLACK_URL" }\n'
        'headers = [{ "$env" = "TOKEN" }, "plain"]\nnested = { deep = { "$env" = "SLACK_URL" } }\n'
    )
    config = load_config(
        write(tmp_path, text), environ={"SLACK_URL": "https://hooks.example/x", "TOKEN": "t"}
    )
    assert config.tenants["a"].config_for("notify") == {
        "url": "https://hooks.example/x",
        "headers": ["t", "plain"],
        "nested": {"deep": "https://hooks.example/x"},
    }
    [line] = problems(tmp_path, text, environ={"TOKEN": "t"})[:1]
    assert "tenants.a.plugin_config.notify.url: environment variable SLACK_URL is not set" in line
