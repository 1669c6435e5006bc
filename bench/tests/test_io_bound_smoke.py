"""bench/io_bound.py: fixed vs growing runners, a handler calling a slow fake Stripe API."""

from __future__ import annotations

import json

import pytest
from conftest import run_script

EVENTS = 40


@pytest.mark.timeout(150)
def test_io_bound(backend: str) -> None:
    args = [
        f"--backend={backend}",
        f"--events={EVENTS}",
        "--repeat=1",
        "--delay-ms=20",
        "--cpu-ms=1",
        "--timeout=60",
    ]
    completed = run_script("io_bound.py", args, timeout=150)
    assert "| fixed 4 |" in completed.stdout and "| growing 4-32 |" in completed.stdout
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (result["backend"], result["events"]) == (backend, EVENTS)
    for scenario in ("io_bound", "cpu_bound"):
        for variant in ("fixed 4", "growing 4-32"):
            figures = result[scenario][variant]
            assert figures["runs_per_second"] > 0 and figures["cpu_ms_per_run"] > 0, (scenario, figures)
    # Every run of the I/O-bound handler called the fake API; the fixed runners never overlap more than 4.
    assert 1 <= result["io_bound"]["fixed 4"]["peak_api_calls"] <= 4
    assert result["cpu_bound"]["fixed 4"]["peak_api_calls"] == 0
