"""bench/memory.py: RSS samples of serve and worker, in both deployments, a few hundred events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_script

EVENTS = 300
SAMPLE_EVERY = 150


@pytest.mark.timeout(150)
def test_both_modes_sampled(backend: str, tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    markdown = tmp_path / "memory.md"
    args = [
        f"--backend={backend}", "--mode=all", f"--events={EVENTS}", f"--sample-every={SAMPLE_EVERY}",
        "--chunk=50", "--settle=0.2", "--timeout=60", "--drain-timeout=60", f"--out={tmp_path}",
        f"--json-out={out}", f"--markdown={markdown}",
    ]  # fmt: skip
    run_script("memory.py", args, timeout=150)
    result = json.loads(out.read_text())
    outcomes = {outcome["mode"]: outcome for outcome in result["outcomes"]}
    assert set(outcomes) == {"split", "inline"}
    for mode, outcome in outcomes.items():
        processes = {"serve", "worker"} if mode == "split" else {"serve"}
        assert outcome["backend"] == backend
        assert outcome["ok"] and outcome["flat"], outcome
        assert outcome["checks"]["runs_expected"] == EVENTS  # the handled mix: one run per event
        assert outcome["checks"]["run_statuses"] == {"succeeded": EVENTS}
        assert [sample["events"] for sample in outcome["samples"]] == [SAMPLE_EVERY, EVENTS]
        for sample in outcome["samples"]:
            assert sample["runs_succeeded"] == sample["events"]
            assert set(sample["rss_mib"]) == processes
            for name, rss in sample["rss_mib"].items():
                # A payhook process with its imports is tens of MiB; its peak is at least its RSS.
                assert 20 < rss <= sample["peak_mib"][name], (name, sample)
        assert set(outcome["growth_mib"]) == processes
    text = markdown.read_text()
    assert "| backend | mode | process |" in text
    assert text.count(" flat |") == 3  # serve and worker split, serve inline
