"""Real Stripe event payloads shipped with payhook, handed out with fresh ids.

Plain data and the standard library only: scripts (a load generator, a demo sender) use the
samples without pytest.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "FIXTURES",
    "THIN_FIXTURES",
    "fresh_event_id",
    "load_event",
    "load_thin_event",
    "sample_names",
    "thin_sample_names",
]

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
# Thin event notifications (`"object": "v2.core.event"`), for `POST /{tenant}/thin`.
THIN_FIXTURES = FIXTURES / "thin"
THIN_SAMPLE = "v1.billing.meter.error_report_triggered"


def fresh_event_id() -> str:
    return f"evt_test_{uuid.uuid4().hex}"


def sample_names() -> list[str]:
    """The snapshot samples `load_event` knows by name."""
    return sorted(path.stem for path in FIXTURES.glob("*.json") if path.stem != "signature_vectors")


def thin_sample_names() -> list[str]:
    """The thin samples `load_thin_event` knows by name."""
    return sorted(path.stem for path in THIN_FIXTURES.glob("*.json"))


def load_event(name: str | Path | Mapping[str, Any], /, **changes: Any) -> dict[str, Any]:
    """A Stripe event with a fresh id.

    `name` is a shipped sample (``"payment_intent.succeeded"``), a path, or a dict.
    Keyword changes use ``__`` for nesting: ``data__object__metadata={"order_id": "7"}``.
    """
    return _load(name, FIXTURES, changes)


def load_thin_event(name: str | Path | Mapping[str, Any] = THIN_SAMPLE, /, **changes: Any) -> dict[str, Any]:
    """A thin event notification (what an event destination posts) with a fresh id.

    Like `load_event`, for the samples in `THIN_FIXTURES`; by default
    ``v1.billing.meter.error_report_triggered``, about a billing meter. Post it with
    ``harness.send(event, thin=True)``: ``context="acct_..."`` makes it a connected account's.
    """
    return _load(name, THIN_FIXTURES, changes)


def _load(name: str | Path | Mapping[str, Any], folder: Path, changes: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(name, Mapping):
        event = copy.deepcopy(dict(name))
    else:
        path = Path(name)
        if path.suffix != ".json":
            path = folder / f"{name}.json"
        event = json.loads(path.read_text(encoding="utf-8"))
    event["id"] = fresh_event_id()
    for dotted, value in changes.items():
        target = event
        *parents, last = dotted.split("__")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return event
