"""bench/failure_storm.py: the default deployment with every run succeeding, failing or erroring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_script

EVENTS = 60
MODES = ("ingest", "succeed", "fail", "error")


@pytest.mark.timeout(150)
def test_every_mode_once(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    markdown = tmp_path / "storm.md"
    args = [
        f"--events={EVENTS}", "--repeat=1", f"--modes={','.join(MODES)}", "--timeout=60",
        f"--out={tmp_path}", f"--json-out={out}", f"--markdown={markdown}",
    ]  # fmt: skip
    completed = run_script("failure_storm.py", args, timeout=150)
    result = json.loads(out.read_text())
    assert json.loads(completed.stdout) == result
    [rows] = result["summary"].values()
    assert set(rows) == set(MODES)
    for mode, row in rows.items():
        assert row["answers_per_s"] > 0 and row["cpu_ms_per_event"] >= 0, (mode, row)
    # What each mode's handler met, as the store has it: one run per delivery.
    assert rows["ingest"]["runs"] == {"pending": EVENTS}
    assert rows["succeed"]["runs"] == {"succeeded": EVENTS}
    assert rows["fail"]["runs"] == {"dead": EVENTS}
    assert rows["error"]["runs"] == {"failed": EVENTS}  # retried later, with back-off
    # One failure row per failed attempt, each within the bounds.
    assert rows["succeed"]["failure_rows"] == rows["ingest"]["failure_rows"] == 0
    assert rows["fail"]["failure_rows"] == rows["error"]["failure_rows"] == EVENTS
    assert 0 < rows["fail"]["failure_chars"] <= EVENTS * 24_000
    assert "answers_vs_succeed" in rows["fail"] and "run_cost_vs_succeed" in rows["error"]
    assert "| installed | fail |" in markdown.read_text()
