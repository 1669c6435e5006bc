"""Real Stripe event payloads shipped with payhook, handed out with fresh ids."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["FIXTURES", "fresh_event_id", "load_event", "sample_names"]

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"


def fresh_event_id() -> str:
    return f"evt_test_{uuid.uuid4().hex}"


def sample_names() -> list[str]:
    return sorted(path.stem for path in FIXTURES.glob("*.json") if path.stem != "signature_vectors")


def load_event(name: str | Path | Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A Stripe event with a fresh id.

    `name` is a shipped sample (``"payment_intent.succeeded"``), a path, or a dict.
    Keyword changes use ``__`` for nesting: ``data__object__metadata={"order_id": "7"}``.
    """
    if isinstance(name, Mapping):
        event = copy.deepcopy(dict(name))
    else:
        path = Path(name)
        if path.suffix != ".json":
            path = FIXTURES / f"{name}.json"
        event = json.loads(path.read_text(encoding="utf-8"))
    event["id"] = fresh_event_id()
    for dotted, value in changes.items():
        target = event
        *parents, last = dotted.split("__")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return event
