"""bench/vs_original.py: payhook's layouts against the original Django module, a few events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_script
from vs_original import ORIGINAL, ORIGINAL_ENV, original_venv

EVENTS = 30
LAYOUTS = ("original", "split", "inline", "two-cores")
# The first run also builds the original's virtualenv (serve.sh does, from the package index).
TIMEOUT = 180 if (original_venv() / "bin/gunicorn").exists() else 420


@pytest.mark.timeout(TIMEOUT)
def test_every_layout_once(tmp_path: Path) -> None:
    if not (ORIGINAL / "serve.sh").exists():
        pytest.skip(f"the original Django module is not at {ORIGINAL} (set {ORIGINAL_ENV} to its folder)")
    out = tmp_path / "vs.json"
    completed = run_script(
        "vs_original.py",
        [f"--events={EVENTS}", "--repeat=1", f"--layouts={','.join(LAYOUTS)}", f"--json-out={out}"],
        timeout=TIMEOUT,
    )
    result = json.loads(out.read_text())
    assert json.loads(completed.stdout) == result
    assert result["events"] == EVENTS
    assert set(result["layouts"]) == set(LAYOUTS)
    for name, layout in result["layouts"].items():
        assert layout["end_to_end_median"] > 0, name
        assert layout["vs_original"] > 0, name
        # The original answers after its handlers; payhook's answer rate is its own figure.
        assert (layout["answered_median"] is None) == (name == "original"), name
        if name != "original":
            assert layout["answered_median"] > 0, name
