"""`payhook plugins list` and `payhook config check`, with the plugins installed for the suite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from payhook.cli import main

INSTALLED = {entry.name for entry in entry_points(group="payhook")}
needs_testplugin = pytest.mark.skipif(
    "testplugin" not in INSTALLED, reason="payhook-testplugin is not installed"
)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payhook.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "p.db"}"\n{text}')
    return path


@needs_testplugin
def test_plugins_list_shows_versions_event_types_and_tenants(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[tenants.a]\nwebhook_secrets = [{ "$env" = "A_UNSET" }]\nplugins = ["testplugin"]\n'
        '[tenants.b]\nwebhook_secrets = ["whsec_b"]\nplugins = ["testplugin"]\n',
    )
    result = invoke("plugins", "list", "--config", str(config), "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["testplugin"] == {
        "name": "testplugin",
        "version": "0.1.0",
        "status": "installed",
        "event_types": ["payment_intent.succeeded"],
        "tenants": ["a", "b"],
        "error": None,
    }
    if "brokenplugin" in INSTALLED:
        assert (
            rows["brokenplugin"]["status"] == "broken"
            and "ModuleNotFoundError" in rows["brokenplugin"]["error"]
        )
        assert rows["brokenplugin"]["tenants"] == []  # broken, but no tenant needs it: not a problem
    table = invoke("plugins", "list", "--config", str(config)).stdout
    assert table.splitlines()[0].split() == ["PLUGIN", "VERSION", "STATUS", "EVENT", "TYPES", "TENANTS"]
    assert any(line.split()[:3] == ["testplugin", "0.1.0", "installed"] for line in table.splitlines())


def test_plugins_list_shows_every_event_type_whole_one_per_line() -> None:
    """The setup guide has readers copy the types into Stripe's form: none may be cut."""
    listed = {
        row["name"]: row["event_types"] for row in json.loads(invoke("plugins", "list", "--json").stdout)
    }
    many = {name: types for name, types in listed.items() if len(", ".join(types)) > 60}
    assert many, "a plugin with many event types (registration, notify) should be installed"
    table = invoke("plugins", "list").stdout
    assert "…" not in table
    lines = table.splitlines()
    type_column = lines[0].index("EVENT TYPES")
    for name, types in many.items():
        [start] = [i for i, line in enumerate(lines) if line.split()[:1] == [name]]
        shown = [line[type_column:].split()[0] for line in lines[start : start + len(types)]]
        assert shown == types


def test_plugins_list_exits_1_when_a_tenant_needs_a_missing_plugin(tmp_path: Path) -> None:
    config = write(tmp_path, '[tenants.a]\nwebhook_secrets = ["whsec_a"]\nplugins = ["not-installed"]\n')
    result = invoke("plugins", "list", "--config", str(config), "--json")
    assert result.exit_code == 1
    [row] = [row for row in json.loads(result.stdout) if row["name"] == "not-installed"]
    assert (row["status"], row["tenants"], row["version"]) == ("missing", ["a"], None)


def test_plugins_list_without_a_config(tmp_path: Path) -> None:
    result = invoke("plugins", "list", "--json")
    assert result.exit_code == 0
    assert {row["name"] for row in json.loads(result.stdout)} >= INSTALLED - {"brokenplugin"}


def test_config_check_reports_every_problem_at_once_plugins_included(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "[processing]\nmax_attempts = 0\n"
        '[tenants.a]\nwebhook_secrets = [{ "$env" = "A_UNSET" }, "sk_live_oops"]\n'
        'plugins = ["not-installed"]\n'
        '[operator]\ntoken = "short"\n',
    )
    result = invoke("config", "check", "--config", str(config), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    keys = [problem.split(": ")[1] for problem in report["problems"]]
    assert keys == [
        "processing.max_attempts",
        "tenants.a.webhook_secrets[0]",
        "operator.token",
        "tenants.a.plugins[0]",  # the plugin check ran although the file had problems
    ]
    assert report["ok"] is False
    [warning] = report["warnings"]
    assert "tenants.a.webhook_secrets[1]" in warning and "sk_live_oops" not in warning
    text = invoke("config", "check", "--config", str(config))
    assert text.exit_code == 1
    assert [line for line in text.stderr.splitlines() if line.startswith("error: ")] == [
        f"error: {problem}" for problem in report["problems"]
    ]
    assert text.stderr.splitlines()[-1] == f"{config}: 4 problem(s)"


@needs_testplugin
def test_config_check_ok_and_allow_missing_env(tmp_path: Path) -> None:
    config = write(
        tmp_path, '[tenants.a]\nwebhook_secrets = [{ "$env" = "A_UNSET" }]\nplugins = ["testplugin"]\n'
    )
    assert invoke("config", "check", "--config", str(config)).exit_code == 1
    relaxed = invoke("config", "check", "--config", str(config), "--allow-missing-env")
    assert relaxed.exit_code == 0 and relaxed.stdout.strip() == f"{config}: OK (1 tenants: a)"
    exported = invoke("config", "check", "--config", str(config), "--json", env={"A_UNSET": "whsec_a"})
    assert json.loads(exported.stdout) == {"ok": True, "problems": [], "warnings": []}


@pytest.mark.parametrize("text", [None, "not = [valid"])
def test_config_check_of_a_missing_or_broken_file_is_a_problem(tmp_path: Path, text: Any) -> None:
    path = tmp_path / "payhook.toml"
    if text is not None:
        path.write_text(text)
    result = invoke("config", "check", "--config", str(path), "--json")
    assert result.exit_code == 1
    [problem] = json.loads(result.stdout)["problems"]
    assert str(path) in problem


# Every command that reads --config, with the arguments it needs besides.
CONFIG_COMMANDS = {
    ("serve",): (),
    ("worker",): (),
    ("db", "upgrade"): (),
    ("events", "list"): (),
    ("events", "show"): ("evt_1",),
    ("events", "trigger"): ("--tenant", "a", "payment_intent.succeeded"),
    ("events", "prune"): ("--older-than-days", "30"),
    ("failures",): (),
    ("runs", "replay"): (),
    ("reconcile",): (),
    ("plugins", "list"): (),
    ("config", "check"): (),
}
# The commands that run handlers or create runs check the tenants' plugins with the file.
CHECK_PLUGINS = {("serve",), ("worker",), ("db", "upgrade"), ("reconcile",), ("config", "check")}


def test_the_list_above_is_every_command_that_reads_config() -> None:
    def reading(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
        for name, command in group.commands.items():
            if command.hidden:
                continue
            if isinstance(command, click.Group):
                yield from reading(command, (*path, name))
            elif any(param.name == "config_path" for param in command.params):
                yield (*path, name)

    assert set(reading(main)) == set(CONFIG_COMMANDS)


@pytest.mark.parametrize("command", list(CONFIG_COMMANDS), ids=[" ".join(c) for c in CONFIG_COMMANDS])
def test_every_command_reports_every_configuration_problem_at_once(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """One loader: each problem on its own line, then exit 2 (`config check`: 1, its finding)."""
    config = write(
        tmp_path,
        "[processing]\nmax_attempts = 0\n"
        '[tenants.a]\nwebhook_secrets = ["whsec_a"]\nplugins = ["not-installed"]\n'
        '[operator]\ntoken = "short"\n',
    )
    result = invoke(*command, *CONFIG_COMMANDS[command], "--config", str(config))

    assert result.exit_code == (1 if command == ("config", "check") else 2), result.output
    problems = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    keys = [problem.split(": ")[2] for problem in problems]
    expected = ["processing.max_attempts", "operator.token"]
    assert keys == expected + (["tenants.a.plugins[0]"] if command in CHECK_PLUGINS else [])
    assert all(problem.startswith(f"error: {config}: ") for problem in problems)
    assert "Traceback" not in result.output and not (tmp_path / "p.db").exists()


@pytest.mark.parametrize("command", list(CONFIG_COMMANDS), ids=[" ".join(c) for c in CONFIG_COMMANDS])
def test_every_command_takes_the_file_from_payhook_config(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "missing.toml"
    result = invoke(*command, *CONFIG_COMMANDS[command], env={"PAYHOOK_CONFIG": str(missing)})
    assert result.exit_code == (1 if command == ("config", "check") else 2), result.output
    assert f"error: {missing}: file not found" in result.stderr
