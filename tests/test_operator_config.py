"""`[operator]`, `[logging]`, and loading a configuration without its secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from payhook import ConfigError, load_config
from payhook.config import LoggingConfig, OperatorConfig

TOKEN = "op-token-for-tests-0123456789"
BASE = '[tenants.conf]\nwebhook_secrets = [{ "$env" = "CONF_WHSEC" }]\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payhook.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ=environ)
    return info.value.problems


def test_operator_section_defaults_and_token_from_the_environment(tmp_path: Path) -> None:
    text = BASE + '[operator]\ntoken = { "$env" = "PAYHOOK_OPERATOR_TOKEN" }\n'
    config = load_config(
        write(tmp_path, text), environ={"CONF_WHSEC": "whsec_x", "PAYHOOK_OPERATOR_TOKEN": TOKEN}
    )
    assert config.operator == OperatorConfig(host="127.0.0.1", port=9300, token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in repr(config.operator)


def test_no_operator_section_serves_nothing_extra(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE), environ={"CONF_WHSEC": "whsec_x"}).operator is None


def test_operator_problems_are_reported_together_without_the_token(tmp_path: Path) -> None:
    text = BASE + '[operator]\nhost = 7\nport = 70000\ntoken = "short-secret"\ncolour = "red"\n'
    found = problems(tmp_path, text, {"CONF_WHSEC": "whsec_x"})
    keys = [line.split(": ")[1] for line in found]
    assert keys == ["operator.colour", "operator.host", "operator.port", "operator.token"]
    assert not any("short-secret" in line for line in found)


@pytest.mark.parametrize(
    ("token", "words"),
    [
        (None, "missing"),
        ('{ "$env" = "NOT_SET" }', "NOT_SET is not set"),
        ('" padded-token-0123456789 "', "whitespace"),
        ("42", "must be a string"),
    ],
)
def test_bad_tokens(tmp_path: Path, token: str | None, words: str) -> None:
    text = BASE + "[operator]\n" + (f"token = {token}\n" if token else "")
    [line] = problems(tmp_path, text, {"CONF_WHSEC": "whsec_x"})
    assert "operator.token" in line and words in line


def test_logging_section(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, BASE + '[logging]\nformat = "json"\nlevel = "warning"\n'), environ={"CONF_WHSEC": "w"}
    )
    assert config.logging == LoggingConfig(format="json", level="warning")
    assert load_config(write(tmp_path, BASE), environ={"CONF_WHSEC": "w"}).logging == LoggingConfig()
    [line] = problems(tmp_path, BASE + '[logging]\nformat = "xml"\n', {"CONF_WHSEC": "w"})
    assert "logging.format" in line and '"text" or "json"' in line


def test_without_secrets_unset_variables_are_not_problems(tmp_path: Path) -> None:
    text = (
        BASE
        + 'plugins = ["notify"]\n[tenants.conf.plugin_config.notify]\nurl = { "$env" = "SLACK_URL" }\n'
        + '[operator]\ntoken = { "$env" = "PAYHOOK_OPERATOR_TOKEN" }\n'
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError):
        load_config(path, environ={})
    config = load_config(path, environ={}, require_secrets=False)
    assert config.tenants["conf"].webhook_secrets == ()
    assert config.tenants["conf"].config_for("notify") == {"url": None}
    assert config.operator is not None and config.operator.token is None
    # Everything else is still checked.
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text + "[database]\npool_size = 0\n"), environ={}, require_secrets=False)
    assert [line.split(": ")[1] for line in info.value.problems] == ["database.pool_size"]


def test_a_config_error_carries_what_could_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE + 'plugins = ["a"]\n'), environ={})
    assert info.value.config is not None
    assert info.value.config.tenants["conf"].plugins == ("a",)
