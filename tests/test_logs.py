"""One log line per delivery and per handler run, as text or JSON (`[logging] format`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from payhook import logs
from payhook.config import LoggingConfig
from payhook.testing.samples import load_event

from .helpers import RecordingPlugin, create_effect_table


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines_of(text: str, what: str) -> list[str]:
    return [line for line in text.splitlines() if what in line]


def deliver_and_run(make_payhook: Any) -> tuple[Any, dict[str, Any]]:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("ledger offline"))
    harness = make_payhook(
        {"rec": plugin}, tenants={"logs": {"plugins": ["rec"]}}, processing={"max_attempts": 1}
    )
    create_effect_table(harness.store.engine)
    event = load_event("payment_intent.succeeded")
    harness.deliver(event)
    harness.process()
    return harness, event


def test_json_lines_for_a_delivery_and_its_run(
    make_payhook: Any, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logs.configure(LoggingConfig(format="json", level="info"))
    _harness, event = deliver_and_run(make_payhook)
    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(records) == len(err.splitlines()), "every line is JSON"
    [delivery] = [r for r in records if r["message"] == "delivery"]
    assert delivery["logger"] == "payhook.delivery" and delivery["level"] == "info"
    assert {k: delivery[k] for k in ("tenant", "event_id", "event_type", "outcome", "status")} == {
        "tenant": "logs",
        "event_id": event["id"],
        "event_type": "payment_intent.succeeded",
        "outcome": "accepted",
        "status": 200,
    }
    assert delivery["duration_ms"] >= 0
    [run] = [r for r in records if r["message"] == "run"]
    assert {
        k: run[k] for k in ("tenant", "event_id", "event_type", "plugin", "handler", "outcome", "error")
    } == {
        "tenant": "logs",
        "event_id": event["id"],
        "event_type": "payment_intent.succeeded",
        "plugin": "rec",
        "handler": "apply",
        "outcome": "dead",
        "error": "ledger offline",
    }
    assert run["duration_ms"] >= 0 and run["attempt"] == 1


def test_text_lines_carry_the_same_facts(
    make_payhook: Any, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logs.configure(LoggingConfig(format="text", level="info"))
    _harness, event = deliver_and_run(make_payhook)
    err = capsys.readouterr().err
    [delivery] = lines_of(err, "payhook.delivery: delivery ")
    assert (
        f"tenant=logs known_tenant=True event_id={event['id']} event_type=payment_intent.succeeded"
        in delivery
    )
    assert "outcome=accepted status=200 duration_ms=" in delivery
    [run] = lines_of(err, "payhook.run: run ")
    assert "plugin=rec handler=apply" in run and "outcome=dead" in run and 'error="ledger offline"' in run


def test_a_strangers_path_cannot_forge_a_line(
    make_payhook: Any, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logs.configure(LoggingConfig(format="text", level="info"))
    harness = make_payhook({})
    harness.client.post("/evil%0A2027-01-01%20INFO%20forged", content=b"{}")
    [line] = lines_of(capsys.readouterr().err, "payhook.delivery")
    assert 'tenant="evil\\n2027-01-01 INFO forged" known_tenant=False' in line
    assert "outcome=unknown_tenant status=404" in line


def test_level_warning_writes_no_delivery_or_run_lines(
    make_payhook: Any, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logs.configure(LoggingConfig(format="text", level="warning"))
    deliver_and_run(make_payhook)
    err = capsys.readouterr().err
    assert not lines_of(err, "payhook.delivery") and not lines_of(err, "payhook.run:")
    assert lines_of(err, "payhook.processing")  # the failure itself is still a WARNING/ERROR line


def test_a_level_given_on_the_command_line_wins(restore_logging: None) -> None:
    logs.configure(LoggingConfig(level="error"), "debug")
    assert logging.getLogger().level == logging.DEBUG


def test_a_failures_warning_line_escapes_what_came_from_outside(
    make_payhook: Any, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """An event id and an error message with a newline (or an escape code) stay on one line."""
    logs.configure(LoggingConfig(format="text", level="warning"))
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("ledger offline\n2027-01-01 ERROR payhook: forged \x1b[2J"))
    harness = make_payhook({"rec": plugin}, tenants={"logs": {"plugins": ["rec"]}})
    create_effect_table(harness.store.engine)
    event = load_event("payment_intent.succeeded", id="evt_1\n2027-01-01 INFO payhook: forged")
    harness.deliver(event)
    harness.process()
    err = capsys.readouterr().err
    assert not [line for line in err.splitlines() if line.startswith("2027-01-01")]
    assert "\x1b" not in err
    [line] = lines_of(err, "payhook.processing")
    assert 'event "evt_1\\n2027-01-01 INFO payhook: forged") attempt 1 failed; will retry' in line
    assert line.endswith('RuntimeError: "ledger offline\\n2027-01-01 ERROR payhook: forged \\u001b[2J"')


def test_configure_with_no_arguments_gives_a_host_payhooks_info_lines_with_time_and_level() -> None:
    """A host mounting payhook calls `payhook.logs.configure()`: INFO lines show, with time
    and level (Python's default prints only WARNING and up, bare)."""
    import re
    import subprocess
    import sys

    script = (
        "import logging; from payhook import logs; logs.configure(); "
        "logging.getLogger('payhook').info('payhook started'); "
        "logging.getLogger('payhook.ingest').warning('careful')"
    )
    lines = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stderr.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} INFO payhook: payhook started", lines[0]), lines
    assert re.fullmatch(rf"{stamp} WARNING payhook\.ingest: careful", lines[1]), lines
