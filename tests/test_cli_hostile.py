"""The command line against hostile input: stored values and option values chosen to break it.

Values that came in with a signed delivery (an event type, an object id, an error message)
may hold terminal escape sequences; tables and text for people show them escaped, and
`--json` keeps them exact. Option values out of any sane range (`--since 99999999999d`,
`--limit 99999999999999999999999`) are usage errors, exit 2, naming the option.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from payhook.cli import main
from payhook.commands.common import LIMIT_MAX, printable
from payhook.testing import store_backends
from payhook.testing.samples import load_event

from .helpers import RecordingPlugin, create_effect_table

# An OSC that retitles the window (ended by BEL), a clear-screen CSI, an 8-bit CSI (C1), a
# bidi override that reverses what follows, a zero-width space, DEL and a line separator.
TITLE = "\x1b]0;owned\x07"
CLEAR = "\x1b[2J"
HOSTILE_TYPE = f"charge.{TITLE}{CLEAR}succeeded\x9b31m\u202egnp.exe"
HOSTILE_OBJECT = f"ch_{CLEAR}\u200b\x7f\u2028\x85\r"
HOSTILE_EVENT = f"evt_{TITLE}hostile\u202e"
HOSTILE_ERROR = f"ledger said {CLEAR}\x1b[31mall fine\x1b[0m\nfake: line\x01?"
# What no human-readable output may contain raw: C0 (but the line break), DEL, C1, and
# format characters such as U+202E and U+200B, and the line separators.
RAW = {"Cc", "Cf", "Zl", "Zp"}


def raw_controls(text: str) -> list[str]:
    return [hex(ord(c)) for c in text if c != "\n" and unicodedata.category(c) in RAW]


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(config)])


def write_config(path: Path, url: str) -> Path:
    path.write_text(
        f'[database]\nurl = "{url}"\n'
        f'[tenants.ops]\nwebhook_secrets = [{{ "$env" = "OPS_WHSEC_UNSET" }}]\nplugins = ["rec"]\n'
    )
    return path


@dataclass
class Hostile:
    config: Path
    event_id: str


@pytest.fixture
def hostile(make_payhook: Any, payhook_database_url: str, tmp_path: Path) -> Hostile:
    """One event whose id, type and object id hold escapes, with a dead run whose error does."""
    plugin = RecordingPlugin("rec", {HOSTILE_TYPE: ["apply"]})
    plugin.fail("apply", lambda n: RuntimeError(HOSTILE_ERROR))
    harness = make_payhook(
        {"rec": plugin}, tenants={"ops": {"plugins": ["rec"]}}, processing={"max_attempts": 1}
    )
    create_effect_table(harness.store.engine)
    event = load_event("charge.refunded.full")
    event["id"], event["type"] = HOSTILE_EVENT, HOSTILE_TYPE
    event["data"]["object"]["id"] = HOSTILE_OBJECT
    response = harness.deliver(event, tenant="ops")  # signed, through the real verifier
    assert response.status_code == 200 and response.json()["status"] == "accepted", response.text
    harness.process()
    assert [run.status for run in harness.runs(HOSTILE_EVENT, tenant="ops")] == ["dead"]
    return Hostile(write_config(tmp_path / "ops.toml", payhook_database_url), HOSTILE_EVENT)


def assert_shown_escaped(result: Result, *expected: str) -> None:
    assert raw_controls(result.output) == [], result.output
    for value in expected:
        assert printable(value) in result.output


@store_backends
def test_tables_and_text_show_control_characters_escaped(hostile: Hostile) -> None:
    listed = run(hostile.config, "events", "list")
    assert listed.exit_code == 0, listed.output
    assert_shown_escaped(listed, HOSTILE_TYPE, HOSTILE_EVENT)
    assert "\\x1b]0;owned\\x07" in listed.output and "\\u202e" in listed.output

    shown = run(hostile.config, "events", "show", hostile.event_id)
    assert shown.exit_code == 0, shown.output
    assert_shown_escaped(shown, HOSTILE_TYPE, HOSTILE_OBJECT, HOSTILE_EVENT)
    assert "\\x9b31m" in shown.output and "\\u2028\\x85\\r" in shown.output
    # The error's own line break stays inside the traceback's line; no line is forged.
    assert "\\x1b[31mall fine\\x1b[0m" in shown.output
    assert not any(line.startswith("fake: line") for line in shown.output.splitlines())

    failures = run(hostile.config, "failures")
    assert failures.exit_code == 1
    assert_shown_escaped(failures, HOSTILE_EVENT)
    assert f"ledger said {printable(CLEAR)}" in failures.output

    plan = run(hostile.config, "runs", "replay", "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert_shown_escaped(plan, HOSTILE_EVENT)


@store_backends
def test_json_output_keeps_the_exact_strings(hostile: Hostile) -> None:
    def as_json(*args: str, status: int = 0) -> Any:
        result = run(hostile.config, *args, "--json")
        assert result.exit_code == status, result.output
        assert raw_controls(result.stdout) == []  # JSON escapes them itself, as \u001b
        return json.loads(result.stdout)

    [listed] = as_json("events", "list")
    assert (listed["id"], listed["type"]) == (HOSTILE_EVENT, HOSTILE_TYPE)
    shown = as_json("events", "show", hostile.event_id)
    assert (shown["id"], shown["type"], shown["object_id"]) == (HOSTILE_EVENT, HOSTILE_TYPE, HOSTILE_OBJECT)
    assert shown["payload"]["data"]["object"]["id"] == HOSTILE_OBJECT
    assert shown["runs"][0]["failures"][0]["message"] == HOSTILE_ERROR
    [group] = as_json("failures", status=1)
    assert (group["example_error"], group["example_event"]) == (HOSTILE_ERROR, HOSTILE_EVENT)


SINCE_COMMANDS = [("events", "list"), ("failures",), ("reconcile",), ("runs", "replay", "--dry-run")]
BAD_WHEN = [
    "99999999999d",  # more days than a timedelta holds
    "999999w",  # fits a timedelta, but reaches back before the year 1
    "9" * 5000 + "s",  # more digits than int() takes
    "0001-01-01T00:00+14:00",  # in UTC, the year 0
    "9999-12-31T23:59-05:00",  # in UTC, the year 10000
]
BAD_OPTIONS = [
    *((command, "--since", value) for command in SINCE_COMMANDS for value in BAD_WHEN),
    *((("runs", "replay", "--dry-run"), "--until", value) for value in BAD_WHEN),
    *(
        (("events", "list"), "--limit", value)
        for value in ["99999999999999999999999", str(LIMIT_MAX + 1), "0"]
    ),
    *((("events", "prune"), "--older-than-days", value) for value in ["1e300", "nan", "inf", "-1", "1e6"]),
    (("serve",), "--port", "99999"),
    (("serve",), "--head-timeout", "nan"),
    (("worker",), "--grace", "inf"),
    (("serve",), "--log-level", "loud"),
    (("worker",), "--log-level", "x" * 5000),
]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    BAD_OPTIONS,
    ids=[f"{' '.join(c)} {o} {v[:24]}" for c, o, v in BAD_OPTIONS],
)
def test_out_of_range_option_values_are_usage_errors(
    tmp_path: Path, command: tuple[str, ...], option: str, value: str
) -> None:
    # No database behind it: the value is refused before anything is opened.
    config = write_config(tmp_path / "ops.toml", f"sqlite:///{tmp_path / 'absent.db'}")
    result = run(config, *command, option, value)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"Invalid value for '{option}'" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr) < 1000  # a 5000-digit value is not echoed back whole
    assert not (tmp_path / "absent.db").exists()


@store_backends
def test_the_widest_accepted_values_work_on_the_store(hostile: Hostile) -> None:
    """The bounds are the store's too: the first and last instants, the largest limit."""
    for since in ["0001-01-01T00:00Z", "0001-01-01T00:00-01:00", "100000w"]:
        assert len(json.loads(run(hostile.config, "events", "list", "--since", since, "--json").stdout)) == 1
    late = "9999-12-31T23:59:59.999999+00:00"
    assert json.loads(run(hostile.config, "events", "list", "--since", late, "--json").stdout) == []
    result = run(hostile.config, "events", "list", "--limit", str(LIMIT_MAX), "--json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 1
    assert run(hostile.config, "failures", "--since", late).exit_code == 0  # nothing failed since
    assert run(hostile.config, "events", "prune", "--older-than-days", "700000").exit_code == 0


@store_backends
def test_runs_replay_takes_the_same_when_forms_as_every_command(hostile: Hostile) -> None:
    """`runs replay --since/--until` go through the one parser: relative ages work there too."""

    def planned(*args: str) -> list[str]:
        result = run(hostile.config, "runs", "replay", "--dry-run", "--json", *args)
        assert result.exit_code == 0, result.output
        return [entry["event"] for entry in json.loads(result.stdout)["rearm"]]

    assert planned("--since", "1h") == [HOSTILE_EVENT]
    assert planned("--until", "1h") == []
    assert planned("--since", "2000-01-01", "--until", "0s") == [HOSTILE_EVENT]
    assert planned("--since", "9999-12-31T23:59Z") == []


STORE_COMMANDS = [
    ("events", "list"),
    ("events", "show", "evt_1"),
    ("failures",),
    ("runs", "replay"),
    ("runs", "replay", "--dry-run"),
    ("events", "prune", "--older-than-days", "30"),
    ("reconcile",),
]


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=[" ".join(c) for c in STORE_COMMANDS])
def test_a_missing_sqlite_file_is_1_and_is_not_created(tmp_path: Path, command: tuple[str, ...]) -> None:
    """Every command on the store says it is missing rather than making an empty one."""
    absent = tmp_path / "absent.db"
    config = tmp_path / "ops.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{absent}"\n')
    result = run(config, *command)
    assert result.exit_code == 1, result.output
    assert f"error: no database at {absent}" in result.stderr
    assert "Traceback" not in result.output
    assert not absent.exists()
