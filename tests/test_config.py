"""Configuration: the documented shape loads; each mistake gets one clear line."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from payhook import ConfigError, create_app, load_config
from payhook.config import Config, DatabaseConfig, IngestConfig, ProcessingConfig, RetryPolicy
from payhook.plugins.host import PluginHost

from .helpers import RecordingPlugin

INSTALLED = {entry.name for entry in entry_points(group="payhook")}

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
    assert config.ingest.body_timeout == 10.0
    assert config.ingest.store_timeout == 10.0
    assert config.database.sqlite_synchronous == "full"  # durable by default: survives a power loss
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
        ('[database]\nsqlite_synchronous = "off"\n', "database.sqlite_synchronous", '"normal" or "full"'),
        ("[database]\nbusy_timeout_ms = -1\n", "database.busy_timeout_ms", "at least 0"),
        ("[ingest]\nbody_timeout = 0\n", "ingest.body_timeout", "greater than 0"),
        ("[ingest]\nstore_timeout = -2.5\n", "ingest.store_timeout", "greater than 0"),
        ('[ingest]\nbody_timeout = "10s"\n', "ingest.body_timeout", "must be float"),
        ("[ingest]\nheader_timeout = 1\n", "ingest.header_timeout", "unknown key"),
        ('[tenants.a]\nwebhook_secrets = ["x"]\nactive = 1\n', "tenants.a.active", "must be bool"),
        ('[tenants.a]\nwebhook_secrets = ["x"]\nmode = "later"\n', "tenants.a.mode", '"queued" or'),
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
    assert "installed: registration" in line and "did you mean 'registration'?" in line
    # A package name made from the typo may be a squatter's: never invite installing it.
    assert "pip install" not in line and "payhook-registraton" not in line


THREE_MISTAKES = (
    "[processing]\nmax_attempts = 0\n"
    '[tenants.a]\nwebhook_secrets = ["whsec_a"]\nplugins = ["notify", "notfy"]\n'
    '[tenants.a.plugin_config.notify]\nurl = "ftp://hooks.example"\n'
)


@pytest.mark.skipif("notify" not in INSTALLED, reason="payhook-notify is not installed")
@pytest.mark.parametrize(("command", "status"), [("serve", 2), ("worker", 2), ("config check", 1)])
def test_serve_worker_and_config_check_report_every_problem_at_once(
    tmp_path: Path, command: str, status: int
) -> None:
    """The file's problems and its plugins' alike, whichever command meets them first."""
    path = write(tmp_path, f'[database]\nurl = "sqlite:///{tmp_path / "p.db"}"\n{THREE_MISTAKES}')
    result = subprocess.run(
        [sys.executable, "-m", "payhook", *command.split(), "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(": ")[2] for line in errors] == [
        "processing.max_attempts",
        "tenants.a.plugins[1]",
        "tenants.a.plugin_config.notify.url",
    ], result.stderr
    assert "did you mean 'notify'?" in errors[1] and "pip install" not in errors[1]
    assert result.returncode == status


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


def test_zero_busy_timeout_and_int_seconds_are_accepted(tmp_path: Path) -> None:
    text = "[database]\nbusy_timeout_ms = 0\n[ingest]\nbody_timeout = 2\nstore_timeout = 0.5\n"
    config = load_config(write(tmp_path, text), environ={})
    assert config.database.busy_timeout_ms == 0
    assert config.ingest.body_timeout == 2.0 and isinstance(config.ingest.body_timeout, float)
    assert config.ingest.store_timeout == 0.5


def test_plugin_retry_override_starts_from_processing(tmp_path: Path) -> None:
    text = "[processing]\nmax_attempts = 3\nbackoff_base = 2\n[processing.plugins.notify]\nbackoff_cap = 60\n"
    processing = load_config(write(tmp_path, text), environ={}).processing
    assert processing.retry_for("notify") == RetryPolicy(max_attempts=3, backoff_base=2.0, backoff_cap=60.0)
    assert processing.retry_for("other") == RetryPolicy(max_attempts=3, backoff_base=2.0)


SECRET_TENANT = '[tenants.x]\nwebhook_secrets = ["whsec_ok", {{ "$env" = "X_WHSEC" }}, {literal}]\n'


@pytest.mark.parametrize(
    ("literal", "env_value", "key", "words"),
    [
        ('""', "whsec_env", "tenants.x.webhook_secrets[2]", "blank"),
        ('"   "', "whsec_env", "tenants.x.webhook_secrets[2]", "blank"),
        ('" whsec_leading"', "whsec_env", "tenants.x.webhook_secrets[2]", "leading or trailing whitespace"),
        ('"whsec_ok"', "whsec_from_a_file\n", "tenants.x.webhook_secrets[1]", "trailing whitespace"),
        ('"whsec_ok"', " \t\n", "tenants.x.webhook_secrets[1]", "blank"),
    ],
)
def test_blank_or_padded_secrets_are_refused_without_showing_them(
    tmp_path: Path, literal: str, env_value: str, key: str, words: str
) -> None:
    text = SECRET_TENANT.format(literal=literal)
    [line] = problems(tmp_path, text, environ={"X_WHSEC": env_value})
    assert f": {key}: " in line and words in line
    assert "whsec_leading" not in line and "whsec_from_a_file" not in line


def test_a_secret_not_starting_with_whsec_warns_once_naming_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = '[tenants.x]\nwebhook_secrets = ["whsec_fine", { "$env" = "X_KEY" }]\n'
    with caplog.at_level(logging.WARNING, logger="payhook.config"):
        config = load_config(write(tmp_path, text), environ={"X_KEY": "sk_live_oops"})
    assert config.tenants["x"].webhook_secrets == ("whsec_fine", "sk_live_oops")
    [record] = [r for r in caplog.records if r.name == "payhook.config"]
    assert record.levelno == logging.WARNING
    assert "tenants.x.webhook_secrets[1]" in record.getMessage()
    assert "sk_live_oops" not in record.getMessage()


DOCUMENTED_SECTIONS = {
    "database": [DatabaseConfig],
    "ingest": [IngestConfig],
    "processing": [ProcessingConfig, RetryPolicy],
}


def documented_defaults(section: str) -> dict[str, str]:
    """`key -> default` from the first table under `## [section]` in docs/configuration.md."""
    docs = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    body = docs.split(f"## `[{section}]`", 1)[1].split("\n#", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", body, flags=re.MULTILINE))


@pytest.mark.parametrize("section", sorted(DOCUMENTED_SECTIONS))
def test_every_setting_is_documented_with_its_default(section: str) -> None:
    documented = documented_defaults(section)
    loaded = getattr(Config.from_mapping({}), section)
    declared: dict[str, object] = {}
    for cls in DOCUMENTED_SECTIONS[section]:
        for item in fields(cls):
            if item.name != "plugins":  # [processing.plugins.<name>] tables
                owner = loaded.retry if cls is RetryPolicy else loaded
                declared[item.name] = getattr(owner, item.name)
    assert set(documented) == set(declared)
    for key, default in documented.items():
        assert tomllib.loads(f"v = {default}")["v"] == declared[key], key


STRIPE_EXAMPLE = """
[stripe]
api_base = "http://127.0.0.1:12111"
max_network_retries = 3
timeout = 12

[tenants.pycon-2027]
webhook_secrets = ["whsec_a"]
thin_webhook_secrets = [{ "$env" = "PYCON_THIN_WHSEC" }]
stripe_api_key = { "$env" = "PYCON_STRIPE_KEY" }
stripe_account = "acct_1Connected"
livemode = "live"
"""


def test_stripe_settings_and_tenant_keys_load(tmp_path: Path) -> None:
    environ = {"PYCON_THIN_WHSEC": "whsec_thin", "PYCON_STRIPE_KEY": "rk_test_restricted_4242"}
    config = load_config(write(tmp_path, STRIPE_EXAMPLE), environ=environ)
    assert config.stripe.api_base == "http://127.0.0.1:12111"
    assert config.stripe.max_network_retries == 3
    assert config.stripe.timeout == 12.0
    tenant = config.tenants["pycon-2027"]
    assert tenant.thin_webhook_secrets == ("whsec_thin",)
    assert tenant.stripe_api_key == "rk_test_restricted_4242"
    assert tenant.stripe_account == "acct_1Connected"
    assert tenant.livemode == "live"
    assert "rk_test" not in repr(tenant) and "whsec_thin" not in repr(tenant)
    assert "rk_test" not in repr(config)


def test_stripe_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[tenants.a]\nwebhook_secrets = ["whsec_a"]\n'), environ={})
    assert config.stripe.api_base is None
    assert config.stripe.max_network_retries == 2
    tenant = config.tenants["a"]
    assert tenant.thin_webhook_secrets == ()
    assert tenant.stripe_api_key is None
    assert tenant.stripe_account is None
    assert tenant.livemode == "both"
    assert tenant.api_version is None


def test_unset_api_key_is_a_problem_unless_secrets_are_not_required(tmp_path: Path) -> None:
    path = write(tmp_path, STRIPE_EXAMPLE)
    found = problems(tmp_path, STRIPE_EXAMPLE)
    assert any("tenants.pycon-2027.stripe_api_key" in line and "PYCON_STRIPE_KEY" in line for line in found)
    assert any("tenants.pycon-2027.thin_webhook_secrets[0]" in line for line in found)
    config = load_config(path, environ={}, require_secrets=False)
    assert config.tenants["pycon-2027"].stripe_api_key is None
    assert config.tenants["pycon-2027"].thin_webhook_secrets == ()


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ('stripe_api_key = "whsec_swapped"', "stripe_api_key", "not an API key"),
        ('stripe_api_key = " sk_test_padded"', "stripe_api_key", "whitespace"),
        ("stripe_api_key = 42", "stripe_api_key", "must be a string"),
        ('livemode = "sometimes"', "livemode", '"live", "test" or "both"'),
        ('stripe_api_key = "sk_test_k"\nthin_webhook_secrets = []', "thin_webhook_secrets", "non-empty list"),
        ('thin_webhook_secrets = ["whsec_t"]', "thin_webhook_secrets", "set tenants.a.stripe_api_key"),
    ],
)
def test_bad_stripe_tenant_keys(tmp_path: Path, line: str, key: str, words: str) -> None:
    found = problems(tmp_path, f'[tenants.a]\nwebhook_secrets = ["whsec_a"]\n{line}\n')
    assert len(found) == 1
    assert f"tenants.a.{key}" in found[0] and words in found[0]
    assert "whsec_swapped" not in found[0] and "sk_test_padded" not in found[0]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('api_base = "ftp://x"', "stripe.api_base"),
        ("max_network_retries = -1", "stripe.max_network_retries"),
        ("timeout = 0", "stripe.timeout"),
        ("retries = 2", "stripe.retries"),
    ],
)
def test_bad_stripe_section(tmp_path: Path, table: str, key: str) -> None:
    found = problems(tmp_path, f"[stripe]\n{table}\n")
    assert len(found) == 1 and key in found[0]
