"""bench/runcost.py: one worker draining runs stored beforehand (no-op handler, or paying orders)."""

from __future__ import annotations

import json

import pytest
from conftest import run_script

# Enough that the worker is still busy at the harness's first poll (20 ms): the measured
# window starts at the first finished run.
RUNS = 300


def runcost(backend: str, plugin: str) -> dict[str, object]:
    args = [f"--backend={backend}", f"--runs={RUNS}", f"--plugin={plugin}", "--timeout=60"]
    completed = run_script("runcost.py", args, timeout=90)
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    assert result["runs"] == RUNS
    for figure in ("seconds", "runs_per_second", "cpu_ms_per_run"):
        assert isinstance(result[figure], int | float) and result[figure] > 0, (figure, result)
    return result


@pytest.mark.timeout(90)
def test_noop_handler(backend: str) -> None:
    assert runcost(backend, "bench")["handler"] == "no-op"


@pytest.mark.timeout(90)
def test_registration_pays_orders() -> None:
    """payhook-registration's handler (one backend is enough for this path)."""
    assert "registration" in str(runcost("sqlite", "registration")["handler"])
