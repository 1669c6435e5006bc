"""`payhook db upgrade`: checks the configuration as `serve` does, and names what it applied."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from payhook.cli import main
from payhook.testing import store_backends
from sqlalchemy import create_engine, inspect

INSTALLED = {ep.name for ep in entry_points(group="payhook")}


def write_config(folder: Path, database_url: str, tenant: str = "") -> Path:
    path = folder / "payhook.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n\n{tenant}', encoding="utf-8")
    return path


def payhook(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@store_backends
def test_it_lists_the_revisions_it_applied_then_says_none_were_needed(
    tmp_path: Path, payhook_database_url: str
) -> None:
    config = write_config(tmp_path, payhook_database_url)

    first = payhook("db", "upgrade", "--config", str(config))
    assert first.exit_code == 0, first.output
    applied = first.stdout.splitlines()
    # Each after what it revises, with the first paragraph of its docstring.
    core = [line for line in applied if line.startswith("applied 000")]
    assert core[:2] == [
        "applied 0001_core: Core tables: payhook_event, payhook_handler_run, payhook_run_failure.",
        "applied 0002_replay_retention: Replay bookkeeping on handler runs; pruned events kept as a "
        "dedupe ledger.",
    ]
    assert all(line.startswith("applied ") for line in applied)
    assert "up to date" not in first.output
    if "registration" in INSTALLED:
        assert any(line.startswith("applied registration_0001: ") for line in applied)
    engine = create_engine(payhook_database_url)
    try:
        assert {"payhook_event", "payhook_handler_run"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()

    again = payhook("db", "upgrade", "--config", str(config))
    assert again.exit_code == 0, again.output
    assert again.stdout == "database is up to date; no migrations were needed\n"


def alembic_ran(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The revisions alembic says it ran, in its order: "Running upgrade A -> B, doc"."""
    ran = [record.getMessage() for record in caplog.records if record.name == "alembic.runtime.migration"]
    return [
        message.split(" -> ")[1].split(",")[0] for message in ran if message.startswith("Running upgrade")
    ]


@store_backends
@pytest.mark.parametrize("start", [None, "0001_core"], ids=["new database", "core at 0001"])
def test_it_names_the_revisions_in_the_order_alembic_applied_them(
    tmp_path: Path, payhook_database_url: str, caplog: pytest.LogCaptureFixture, start: str | None
) -> None:
    """Plugin branches and the core's do not depend on each other: alembic orders them as it
    will, and `db upgrade` must say what it did, as it did it."""
    from alembic import command
    from payhook.store import migrations

    config = write_config(tmp_path, payhook_database_url)
    if start is not None:
        engine = create_engine(payhook_database_url)
        try:
            command.upgrade(migrations.alembic_config(engine, migrations.plugin_version_locations()), start)
        finally:
            engine.dispose()
    caplog.clear()
    caplog.set_level("INFO", logger="alembic.runtime.migration")

    upgrade = payhook("db", "upgrade", "--config", str(config))

    assert upgrade.exit_code == 0, upgrade.output
    named = [line.split(":")[0].removeprefix("applied ") for line in upgrade.stdout.splitlines()]
    assert named == alembic_ran(caplog)
    assert "0005_operator_sessions" in named and (start is None) == ("0001_core" in named)


def test_a_tenant_naming_an_unknown_plugin_stops_it_as_it_stops_serve(tmp_path: Path) -> None:
    database = tmp_path / "payhook.db"
    config = write_config(
        tmp_path,
        f"sqlite:///{database}",
        '[tenants.conf]\nwebhook_secrets = [{ "$env" = "CONF_WHSEC" }]\nplugins = ["no-such-plugin"]\n',
    )

    upgrade = payhook("db", "upgrade", "--config", str(config))
    serve = payhook("serve", "--config", str(config), env={"CONF_WHSEC": "whsec_x"})

    assert (upgrade.exit_code, serve.exit_code) == (2, 2)
    [line] = upgrade.stderr.splitlines()
    assert line.startswith(f"error: {config}: tenants.conf.plugins[0]: unknown plugin 'no-such-plugin'")
    assert line in serve.stderr.splitlines()
    assert not database.exists()  # nothing was migrated


@pytest.mark.skipif("notify" not in INSTALLED, reason="payhook-notify is not installed")
def test_plugin_settings_are_checked_but_their_secrets_are_not_needed(tmp_path: Path) -> None:
    notify = '[tenants.conf]\nwebhook_secrets = [{ "$env" = "CONF_WHSEC" }]\nplugins = ["notify"]\n'
    unset_secret = write_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'a.db'}",
        notify + '[tenants.conf.plugin_config.notify]\nurl = { "$env" = "UNSET_URL" }\n',
    )
    upgrade = payhook("db", "upgrade", "--config", str(unset_secret), env={"UNSET_URL": ""})
    assert upgrade.exit_code == 0, upgrade.output

    mistake = write_config(
        tmp_path, f"sqlite:///{tmp_path / 'b.db'}", notify + "[tenants.conf.plugin_config.notify]\nurl = 5\n"
    )
    upgrade = payhook("db", "upgrade", "--config", str(mistake))
    assert upgrade.exit_code == 2
    assert upgrade.stderr == f"error: {mistake}: tenants.conf.plugin_config.notify.url: must be str, got 5\n"
