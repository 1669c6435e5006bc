"""bench/run.py: the ingest benchmark, every scenario and the baseline, one tiny level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_script

REQUESTS = 30
WARMUP = 10


@pytest.mark.timeout(150)
def test_every_scenario_once(backend: str, tmp_path: Path) -> None:
    markdown = tmp_path / "results.md"
    args = [
        f"--backend={backend}", "--scenario=all", f"--requests={REQUESTS}", f"--warmup={WARMUP}",
        "--concurrency=4", "--repeat=1", "--tenants=2", "--quiet-wait=0", "--timeout=60",
        "--drain-timeout=60", f"--out={tmp_path}", f"--markdown={markdown}",
    ]  # fmt: skip
    run_script("run.py", args, timeout=150)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["nproc"] >= 1
    (baseline,) = results["baseline"].values()
    assert [level["concurrency"] for level in baseline] == [4]
    assert baseline[0]["http_statuses"] == {"200": REQUESTS}
    assert baseline[0]["events_per_second"] > 0

    assert [outcome["scenario"] for outcome in results["outcomes"]] == ["a", "b", "c"]
    for outcome in results["outcomes"]:
        assert outcome["backend"] == backend
        (level,) = outcome["levels"]
        assert level["requests"] == REQUESTS
        assert level["http_statuses"] == {"200": REQUESTS}
        assert level["events_per_second"] > 0
        assert 0 < level["p50_ms"] <= level["p99_ms"] <= level["max_ms"]
        assert level["batch"] >= 1
        checks = outcome["checks"]
        assert checks["exactly_once"] and checks["sent"] == checks["stored"] == REQUESTS + WARMUP
        if outcome["scenario"] == "a":
            assert checks["run_statuses"] == {}
        else:
            # About a third of the mix reaches the bench plugin's handler: every run succeeded.
            assert checks["handled_sent"] > 0
            assert checks["run_statuses"] == {"succeeded": checks["handled_sent"]}
            assert checks["bench_hits"] == checks["handled_sent"]
            assert level["drain_seconds"] is not None

    text = markdown.read_text()
    assert "#### Baseline" in text
    assert text.count("Stored exactly once: yes") == 3
