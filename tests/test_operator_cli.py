"""The operator commands against a real store: events, failures, runs replay --dry-run.

They run in this process through click's runner (a real store, the real commands); the
last tests run the installed `payhook` command to check the exit statuses and the progress
bar as a shell sees them. The configuration they read names its secrets by `$env` and none
is set: these commands never verify a signature, so they must not need one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from payhook import GiveUp, Skip
from payhook.cli import main
from payhook.testing import PayhookHarness, store_backends
from payhook.testing.samples import load_event

from .helpers import RecordingPlugin, create_effect_table

pytestmark = store_backends

HANDLERS = {
    "payment_intent.succeeded": ["apply", "audit"],
    "charge.refunded": ["refund"],
    "charge.captured": ["skipper"],
    "charge.dispute.created": ["quitter"],
}


def cli_config(path: Path, url: str, plugins: str = '["rec"]') -> Path:
    path.write_text(
        f'[database]\nurl = "{url}"\n'
        f'[tenants.ops-a]\nwebhook_secrets = [{{ "$env" = "OPS_A_WHSEC_UNSET" }}]\nplugins = {plugins}\n'
        f'[tenants.ops-b]\nwebhook_secrets = [{{ "$env" = "OPS_B_WHSEC_UNSET" }}]\nplugins = {plugins}\n'
    )
    return path


@dataclass
class Stored:
    """What the fixture delivered, by the status each event should have."""

    harness: PayhookHarness
    config: Path
    events: dict[str, str]  # status -> Stripe event id (tenant ops-a)
    other_tenant: str  # an event id of ops-b


@pytest.fixture
def stored(make_payhook: Any, payhook_database_url: str, tmp_path: Path) -> Stored:
    plugin = RecordingPlugin("rec", {k: list(v) for k, v in HANDLERS.items()})
    plugin.fail("apply", lambda n: RuntimeError(f"ledger offline (call {n})"))
    plugin.fail("skipper", lambda n: Skip("nothing to do"))
    plugin.fail("quitter", lambda n: GiveUp("not ours"))
    tenants = {"ops-a": {"plugins": ["rec"]}, "ops-b": {"plugins": ["rec"]}}
    harness = make_payhook({"rec": plugin}, tenants=tenants, processing={"max_attempts": 3})
    create_effect_table(harness.store.engine)
    events = {
        "failed": load_event("payment_intent.succeeded"),  # apply fails and will retry; audit succeeds
        "succeeded": load_event("charge.refunded.full"),
        "skipped": load_event("charge.captured"),
        "dead": load_event("charge.dispute.created"),
        "ignored": load_event("customer.created"),
    }
    for event in events.values():
        assert harness.deliver(event, tenant="ops-a").status_code == 200
    other = load_event("charge.refunded.full")
    harness.deliver(other, tenant="ops-b")
    harness.process()
    pending = load_event("payment_intent.succeeded")
    harness.deliver(pending, tenant="ops-a")  # not processed: its runs stay pending
    ids = {status: event["id"] for status, event in events.items()} | {"pending": pending["id"]}
    return Stored(harness, cli_config(tmp_path / "ops.toml", payhook_database_url), ids, other["id"])


def run(config: Path, *args: str) -> Result:
    env = {"OPS_A_WHSEC_UNSET": "", "OPS_B_WHSEC_UNSET": ""}
    return CliRunner().invoke(main, [*args, "--config", str(config)], env=env, catch_exceptions=False)


def as_json(config: Path, *args: str, status: int = 0) -> Any:
    result = run(config, *args, "--json")
    assert result.exit_code == status, result.stderr
    return json.loads(result.stdout)


def test_events_list_shape_order_and_the_status_rule(stored: Stored) -> None:
    listed = as_json(stored.config, "events", "list")
    assert [e["id"] for e in listed][:2] == [stored.events["pending"], stored.other_tenant]
    for entry in listed:
        assert {"id", "tenant", "type", "received_at", "status", "livemode", "runs"} <= set(entry)
    by_id = {(e["tenant"], e["id"]): e["status"] for e in listed}
    assert {status: by_id[("ops-a", event_id)] for status, event_id in stored.events.items()} == {
        status: status for status in stored.events
    }
    assert by_id[("ops-b", stored.other_tenant)] == "succeeded"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--tenant", "ops-b"), ["other"]),
        (("--status", "dead"), ["dead"]),
        (("--status", "ignored"), ["ignored"]),
        (("--type", "charge.captured"), ["skipped"]),
        (("--since", "2999-01-01"), []),
        (("--tenant", "ops-a", "--limit", "2"), ["pending", "ignored"]),
    ],
)
def test_events_list_filters(stored: Stored, args: tuple[str, ...], expected: list[str]) -> None:
    names = {event_id: status for status, event_id in stored.events.items()} | {stored.other_tenant: "other"}
    assert [names[e["id"]] for e in as_json(stored.config, "events", "list", *args)] == expected


def test_events_list_since_relative_and_as_a_table(stored: Stored) -> None:
    assert len(as_json(stored.config, "events", "list", "--since", "1h")) == 7
    result = run(stored.config, "events", "list", "--status", "failed")
    assert result.exit_code == 0
    header, row = result.stdout.splitlines()
    assert header.split() == ["RECEIVED", "(UTC)", "TENANT", "TYPE", "STATUS", "RUNS", "EVENT"]
    assert row.split()[2:] == ["ops-a", "payment_intent.succeeded", "failed", "2", stored.events["failed"]]


def test_events_show_has_the_payload_runs_and_each_failure_with_its_traceback(stored: Stored) -> None:
    shown = as_json(stored.config, "events", "show", stored.events["failed"])
    assert (shown["id"], shown["tenant"], shown["status"]) == (stored.events["failed"], "ops-a", "failed")
    assert shown["payload"]["id"] == stored.events["failed"]
    runs = {run["handler"]: run for run in shown["runs"]}
    assert (runs["audit"]["status"], runs["apply"]["status"]) == ("succeeded", "failed")
    [failure] = runs["apply"]["failures"]
    assert failure["error_type"] == "RuntimeError" and failure["message"] == "ledger offline (call 1)"
    assert "Traceback (most recent call last)" in failure["traceback"]

    text = run(stored.config, "events", "show", stored.events["failed"]).stdout
    assert "attempt 1 failed at" in text and "RuntimeError: ledger offline (call 1)" in text
    assert "Traceback (most recent call last)" in text
    assert f'"id": "{stored.events["failed"]}"' in text  # the payload, pretty-printed


def test_events_show_missing_is_1_and_ambiguous_is_2(stored: Stored) -> None:
    missing = run(stored.config, "events", "show", "evt_not_stored")
    assert missing.exit_code == 1 and "no event 'evt_not_stored'" in missing.stderr
    event = load_event("charge.refunded.full")
    for tenant in ("ops-a", "ops-b"):
        stored.harness.deliver(event, tenant=tenant)
    ambiguous = run(stored.config, "events", "show", event["id"])
    assert ambiguous.exit_code == 2 and "ops-a, ops-b" in ambiguous.stderr
    assert as_json(stored.config, "events", "show", event["id"], "--tenant", "ops-b")["tenant"] == "ops-b"


def test_failures_are_grouped_and_exit_1(stored: Stored) -> None:
    groups = as_json(stored.config, "failures", status=1)
    assert [
        (g["tenant"], g["plugin"], g["error_type"], g["error"], g["failed"], g["dead"]) for g in groups
    ] == [
        ("ops-a", "rec", "RuntimeError", "ledger offline (call N)", 1, 0),
        ("ops-a", "rec", "payhook.GiveUp", "not ours", 0, 1),
    ]
    assert groups[0]["example_event"] == stored.events["failed"]
    assert [g["example_error"] for g in groups] == ["ledger offline (call 1)", "not ours"]
    table = run(stored.config, "failures")
    assert table.exit_code == 1 and "payhook.GiveUp: not ours" in table.stdout
    assert as_json(stored.config, "failures", "--tenant", "ops-b") == []
    assert as_json(stored.config, "failures", "--since", "2999-01-01") == []


def test_failures_alike_but_for_ids_and_numbers_are_one_group_with_an_example(
    make_payhook: Any, payhook_database_url: str, stripe_event: Any, tmp_path: Path
) -> None:
    messages = iter(
        ["order 4242 does not exist", "order 9999 does not exist", "no such intent pi_3PxyzAbC12"]
    )
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["quitter"]})
    plugin.fail("quitter", lambda n: GiveUp(next(messages)))
    harness = make_payhook({"rec": plugin}, tenants={"ops-a": {"plugins": ["rec"]}})
    create_effect_table(harness.store.engine)
    events = [stripe_event("payment_intent.succeeded") for _ in range(3)]
    for event in events:  # one at a time: the messages go to the events in order
        harness.deliver(event, tenant="ops-a")
        harness.process()
    delivered = [event["id"] for event in events]
    config = cli_config(tmp_path / "ops.toml", payhook_database_url)
    groups = as_json(config, "failures", status=1)
    assert [(g["error"], g["dead"]) for g in groups] == [
        ("order N does not exist", 2),
        ("no such intent pi_…", 1),
    ]
    first_order = min(delivered[:2])
    assert groups[0]["example_event"] == first_order
    assert (
        groups[0]["example_error"] == f"order {4242 if first_order == delivered[0] else 9999} does not exist"
    )
    lines = run(config, "failures").stdout.splitlines()
    assert [line.split()[-1] for line in lines[1:]] == ["exist", "exist", "pi_…", "pi_3PxyzAbC12"]
    assert "payhook.GiveUp: order N does not exist" in lines[1]
    assert lines[2].strip().startswith("e.g. order ")


def test_replay_dry_run_lists_what_it_would_do_and_changes_nothing(stored: Stored) -> None:
    before = [(run.id, run.status, run.replay_count) for run in stored.harness.runs()]
    plan = as_json(stored.config, "runs", "replay", "--tenant", "ops-a", "--dry-run")
    assert plan["dry_run"] is True and plan["create"] == []
    assert sorted((r["event"], r["handler"], r["status"]) for r in plan["rearm"]) == sorted(
        [(stored.events["failed"], "apply", "failed"), (stored.events["dead"], "quitter", "dead")]
    )
    assert [(run.id, run.status, run.replay_count) for run in stored.harness.runs()] == before
    assert as_json(stored.config, "runs", "replay", "--tenant", "ops-a") == {"rearmed": 2, "created": 0}
    statuses = {run.handler: run.status for run in stored.harness.runs(stored.events["dead"])}
    assert statuses == {"quitter": "pending"}


def test_usage_and_configuration_errors_exit_2(stored: Stored, tmp_path: Path) -> None:
    assert run(stored.config, "events", "list", "--since", "yesterday").exit_code == 2
    assert run(stored.config, "events", "list", "--status", "on-fire").exit_code == 2
    assert run(stored.config, "events", "list", "--limit", "0").exit_code == 2
    broken = tmp_path / "broken.toml"
    broken.write_text("[database]\npool_size = 0\n")
    result = run(broken, "failures")
    assert result.exit_code == 2 and "database.pool_size" in result.stderr
    assert CliRunner().invoke(main, ["events", "list"], env={"PAYHOOK_CONFIG": ""}).exit_code == 2


def test_an_unreadable_store_is_1_and_creates_nothing(stored: Stored, tmp_path: Path) -> None:
    config = cli_config(tmp_path / "nowhere.toml", f"sqlite:///{tmp_path / 'absent.db'}")
    result = run(config, "events", "list")
    assert result.exit_code == 1 and "no database at" in result.stderr
    assert not (tmp_path / "absent.db").exists()


def test_the_installed_command_and_its_progress_bar(stored: Stored) -> None:
    """Exit statuses through the real entry point; the bar only on a terminal."""
    command = [sys.executable, "-m", "payhook"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_WHSEC_UNSET")}

    def payhook(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args, "--config", str(stored.config)], env=env, text=True, timeout=60, **kwargs
        )

    failures = payhook("failures", "--json", capture_output=True)
    assert failures.returncode == 1 and len(json.loads(failures.stdout)) == 2
    replay = payhook("runs", "replay", "--tenant", "ops-a", "--json", capture_output=True)
    assert replay.returncode == 0 and replay.stderr == ""  # no bar: stderr is not a terminal

    import pty

    leader, follower = pty.openpty()
    try:
        stored.harness.process(include_scheduled=True)  # everything finished (and dead stays dead)
        prune = payhook("events", "prune", "--older-than-days", "0", stdout=subprocess.PIPE, stderr=follower)
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert prune.returncode == 0, drawn
    assert b"pruning events" in drawn
