"""Worker shutdown: queued runs go back untouched, stuck ones are handed back as failed attempts."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from payhook.testing import PayhookHarness

from .helpers import RecordingPlugin, create_effect_table


# On SQLite a blocked handler holds the write lock that handing back needs; PostgreSQL shows
# the whole behaviour.
@pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)
def test_stop_releases_queued_runs_and_hands_back_stuck_ones(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    plugin.gate = threading.Event()  # every handler call blocks until the test opens it
    harness: PayhookHarness = make_payhook(
        {"rec": plugin}, processing={"worker": True, "concurrency": 1, "lease_seconds": 300}
    )
    create_effect_table(harness.store.engine)
    for _ in range(3):
        harness.deliver(stripe_event("payment_intent.succeeded"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(plugin.calls) < 1:
        time.sleep(0.02)
    worker = harness.app.payhook.worker
    assert worker is not None
    # One run executing, one claimed and queued behind it (twice the concurrency), one due.
    assert sorted(run.status for run in harness.runs()) == ["pending", "running", "running"]

    handed_back = harness.client.portal.call(worker.stop, 0.2)
    plugin.gate.set()

    assert handed_back == 1
    by_status = sorted((run.status, run.attempts) for run in harness.runs())
    assert by_status == [("failed", 1), ("pending", 0), ("pending", 0)]
    [failure] = harness.failures()
    assert failure.error_type == "WorkerStopped"
    assert len(plugin.calls) == 1  # the queued run never started
