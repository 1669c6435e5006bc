"""How one execution of a handler run ended: what the processor returns and observers read."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Outcome", "RunOutcome"]


class Outcome(StrEnum):
    """How one execution of a run ended."""

    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"  # another attempt is scheduled
    DEAD = "dead"
    LEASE_LOST = "lease_lost"  # another worker owns the run now; nothing was recorded


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: Outcome
    error: str | None = None
