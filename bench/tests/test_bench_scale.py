"""bench/scale.py: every phase of the scale-out benchmark (PostgreSQL only), one worker, tiny."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_postgres, run_script

EVENTS = 30
WORKER_RUNS = 30
IO_RUNS = 20


@pytest.mark.timeout(180)
def test_every_phase_once(tmp_path: Path) -> None:
    require_postgres()
    markdown = tmp_path / "scale.md"
    args = [
        "--workers=1", f"--events={EVENTS}", "--warmup=10", f"--worker-runs={WORKER_RUNS}",
        "--lag-rate=20", "--lag-seconds=1", f"--io-runs={IO_RUNS}", "--io-sleep-ms=5",
        "--io-concurrency=4", "--tenants=2", "--repeat=1", "--quiet-wait=0", "--timeout=60",
        "--drain-timeout=60", f"--out={tmp_path}", f"--markdown={markdown}",
    ]  # fmt: skip
    run_script("scale.py", args, timeout=180)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["postgres"].startswith("PostgreSQL")
    phases = {name: results[name] for name in ("e2e", "workers", "lag", "io")}
    for name, measured in phases.items():
        assert len(measured) == 1, name
        (result,) = measured
        assert result["workers"] == 1
        assert result["checks"]["ok"], (name, result["checks"])
    (e2e,) = phases["e2e"]
    assert e2e["events"] == EVENTS
    assert e2e["runs"] > 0  # a third of the ingest mix is handled
    assert e2e["events_per_second"] > 0 and e2e["http_errors"] == 0
    (alone,) = phases["workers"]
    assert alone["runs"] == WORKER_RUNS and alone["runs_per_second"] > 0
    (lag,) = phases["lag"]
    assert lag["events"] == 20 and lag["achieved_rate"] > 0
    assert lag["runs"] == 0 or lag["lag_ms"]["50"] > 0
    (io,) = phases["io"]
    assert io["runs"] == IO_RUNS and io["sleep_ms"] == 5 and io["concurrency"] == 4
    assert io["runs_per_second"] > 0
    assert "#### End to end" in markdown.read_text()
