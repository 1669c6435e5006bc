"""Every handler run executed is observed: counted in the Prometheus instruments and logged.

`observe_run` wraps the one function that produces a run's outcome (`Processor.execute`);
`run_observed` is for a run whose outcome is known only later. Each writes one line with
the tenant, the event, the plugin, the handler, the outcome and the duration.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from payhook import metrics
from payhook.execute.outcome import RunOutcome
from payhook.logs import Fields

if TYPE_CHECKING:
    from payhook.store.runs import ClaimedRun

__all__ = ["observe_run", "run_observed"]

run_log = logging.getLogger("payhook.run")

Executor = TypeVar("Executor")


def observe_run(
    execute: Callable[[Executor, ClaimedRun], RunOutcome],
) -> Callable[[Executor, ClaimedRun], RunOutcome]:
    """Count and log every outcome `execute` returns."""

    @functools.wraps(execute)
    def observed(processor: Executor, run: ClaimedRun) -> RunOutcome:
        started = time.perf_counter()
        outcome = execute(processor, run)
        run_observed(run, outcome, time.perf_counter() - started)
        return outcome

    return observed


def run_observed(run: ClaimedRun, outcome: RunOutcome, seconds: float) -> None:
    """Count and log one run's outcome (for a run whose outcome is known only later, say once
    the worker's batch of success marks committed)."""
    metrics.run_finished(run.tenant, run.plugin, outcome.status.value, seconds)
    if run_log.isEnabledFor(logging.INFO):
        _log_run(run, outcome, seconds)


def _log_run(run: ClaimedRun, outcome: RunOutcome, seconds: float) -> None:
    facts = {
        "tenant": run.tenant,
        "event_id": run.stripe_event_id,
        # From the event's row, which the claim reads anyway: no payload is parsed for it.
        "event_type": run.event_type,
        "plugin": run.plugin,
        "handler": run.handler,
        "run_id": run.id,
        "attempt": run.attempts,
        "outcome": outcome.status.value,
        "duration_ms": round(seconds * 1000, 3),
    }
    if outcome.error is not None and outcome.status.value != "succeeded":
        facts["error"] = outcome.error
    run_log.info(Fields("run", facts))
