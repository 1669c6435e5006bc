"""The `payhook` command, run as a real process: serve, worker, db upgrade, config errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
from payhook.testing import TEST_SECRET, signed_headers, store_backends
from payhook.testing.samples import load_event
from sqlalchemy import create_engine, inspect

HAS_TESTPLUGIN = "testplugin" in {ep.name for ep in entry_points(group="payhook")}
# What an old spelling of a command prints on stderr before it runs.
RENAMED = "`payhook {}` is now `payhook {}`; the old name will go in a later release\n"


def payhook_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "payhook", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, url: str, plugins: list[str], worker: bool) -> Path:
    path.write_text(
        f'[database]\nurl = "{url}"\n'
        f"[processing]\nworker = {str(worker).lower()}\npoll_interval = 0.1\n"
        f'[tenants.conf]\nwebhook_secrets = [{{ "$env" = "CONF_WHSEC" }}]\nplugins = {json.dumps(plugins)}\n'
    )
    return path


@contextmanager
def running(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(args, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")


def run_statuses(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT status FROM payhook_handler_run")]


def test_serve_and_a_separate_worker_on_sqlite(tmp_path: Path) -> None:
    plugins = ["testplugin"] if HAS_TESTPLUGIN else []
    config = write_config(tmp_path / "payhook.toml", "sqlite:///payhook.db", plugins, worker=False)
    env = {"CONF_WHSEC": TEST_SECRET}
    port = free_port()
    serve = payhook_command("serve", "--config", str(config), "--port", str(port), "--log-level", "warning")
    with running(serve, env) as server:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", server)
        event = load_event("payment_intent.succeeded")
        body = json.dumps(event).encode()
        response = httpx.post(f"http://127.0.0.1:{port}/conf", content=body, headers=signed_headers(body))
        assert response.status_code == 200
        assert response.json() == {"status": "accepted" if plugins else "ignored", "event": event["id"]}
        # `payhook event trigger` is the old spelling: it still works, and says the new one.
        for group in ("events", "event"):
            trigger = subprocess.run(
                payhook_command(
                    group,
                    "trigger",
                    "--config",
                    str(config),
                    "--tenant",
                    "conf",
                    "--json",
                    "--url",
                    f"http://127.0.0.1:{port}/conf",
                    "customer.created",
                ),
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert trigger.returncode == 0, trigger.stderr
            answer = json.loads(trigger.stdout)
            assert answer["status_code"] == 200 and answer["body"]["status"] == "ignored"
            assert trigger.stderr == (
                "" if group == "events" else RENAMED.format("event trigger", "events trigger")
            )
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so supervisors see why it stopped.
        assert server.wait(30) in (0, -signal.SIGTERM)
    db = tmp_path / "payhook.db"  # relative to the config file, and created by `serve`
    assert run_statuses(db) == (["pending"] if plugins else [])
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM payhook_event").fetchone() == (3,)
    if plugins:
        with running(payhook_command("worker", "--config", str(config)), env) as worker:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and run_statuses(db) != ["succeeded"]:
                time.sleep(0.1)
            assert run_statuses(db) == ["succeeded"]
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0


@store_backends
def test_db_upgrade(tmp_path: Path, payhook_database_url: str) -> None:
    config = write_config(tmp_path / "payhook.toml", payhook_database_url, [], worker=False)
    result = subprocess.run(
        payhook_command("db", "upgrade", "--config", str(config)),
        env={**os.environ, "CONF_WHSEC": "x"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    engine = create_engine(payhook_database_url)
    assert {"payhook_event", "payhook_handler_run", "payhook_run_failure"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_config_errors_exit_2_with_one_line_each(tmp_path: Path, command: str) -> None:
    config = write_config(tmp_path / "payhook.toml", "sqlite:///x.db", ["no-such-plugin"], worker=False)
    result = subprocess.run(
        payhook_command(command, "--config", str(config)),
        env={k: v for k, v in os.environ.items() if k != "CONF_WHSEC"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any("tenants.conf.webhook_secrets[0]: environment variable CONF_WHSEC" in line for line in lines)
    assert not (tmp_path / "x.db").exists()


@store_backends
def test_runs_replay_and_event_prune(tmp_path: Path, make_payhook: Any, payhook_database_url: str) -> None:
    from .helpers import RecordingPlugin, create_effect_table

    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("bug") if n == 1 else None)
    harness = make_payhook({"rec": plugin}, processing={"max_attempts": 1})
    create_effect_table(harness.store.engine)
    harness.deliver(load_event("payment_intent.succeeded"))
    harness.process()
    assert [run.status for run in harness.runs()] == ["dead"]

    config = tmp_path / "ops.toml"
    config.write_text(
        f'[database]\nurl = "{payhook_database_url}"\n[tenants.test]\nwebhook_secrets = ["x"]\n'
    )

    def cli(*args: str) -> Any:
        result = subprocess.run(
            payhook_command(*args, "--config", str(config), "--json"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert cli("runs", "replay", "--tenant", "test", "--by", "ops:test") == {"rearmed": 1, "created": 0}
    [run] = harness.runs()
    assert (run.status, run.replayed_by) == ("pending", "ops:test")
    assert cli("events", "prune", "--older-than-days", "0") == {"events": 0, "runs": 0}  # not finished yet
    harness.process()
    assert cli("events", "prune", "--older-than-days", "0") == {"events": 1, "runs": 1}
    assert [event.payload for event in harness.events()] == [""]


def test_the_old_spellings_run_the_same_commands_and_say_the_new_names(tmp_path: Path) -> None:
    """`payhook event prune` (systemd timers, cron) and `payhook plugin new` keep working."""
    from click.testing import CliRunner
    from payhook.cli import main

    config = write_config(tmp_path / "payhook.toml", f"sqlite:///{tmp_path / 'p.db'}", [], worker=False)
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade", "--config", str(config)]).exit_code == 0

    new = runner.invoke(main, ["events", "prune", "--older-than-days", "1", "--config", str(config)])
    old = runner.invoke(main, ["event", "prune", "--older-than-days", "1", "--config", str(config)])
    assert (new.exit_code, new.stdout, new.stderr) == (0, "pruned 0 events and 0 runs\n", "")
    assert (old.exit_code, old.stdout) == (0, new.stdout)
    assert old.stderr == RENAMED.format("event prune", "events prune")

    # A mistyped call of the old name says the new one too, before click's usage error.
    mistyped = runner.invoke(main, ["event", "prune", "--config", str(config)])
    assert mistyped.exit_code == 2
    assert mistyped.stderr.startswith(RENAMED.format("event prune", "events prune"))
    assert "Missing option '--older-than-days'" in mistyped.stderr

    made = runner.invoke(main, ["plugin", "new", "badges", "--directory", str(tmp_path / "code")])
    assert made.exit_code == 0, made.output
    assert made.stderr == RENAMED.format("plugin new", "plugins new")
    assert (tmp_path / "code" / "payhook-badges" / "pyproject.toml").is_file()

    # Hidden from help: people learn the new names only.
    listed = runner.invoke(main, ["--help"]).stdout
    assert "  events " in listed and "  plugins " in listed
    assert "  event " not in listed and "  plugin " not in listed
