"""Helpers for payhook-disputes' tests: the tenant, plugins that listen to or answer its
hooks, and `Shop`, the harness plus shortcuts.

They live here, not in conftest.py, so that test modules import them by a name no other
suite uses: every suite can then be collected in one pytest run.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from payhook import hookimpl
from sqlmodel import col, select

from payhook_disputes.models import Dispute

if TYPE_CHECKING:
    from payhook.testing import PayhookHarness

TENANT = "shop"


class DisputeListener:
    """Implements `dispute_opened`, the way a notification plugin would."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, str, str]] = []

    @hookimpl
    def dispute_opened(self, dispute: Dispute, tenant: Any) -> None:
        self.opened.append((dispute.stripe_dispute_id, dispute.status, tenant.slug))


class OrderBook:
    """An order-keeping plugin that is not payhook-registration: the hook is for any of them."""

    def __init__(self) -> None:
        self.by_charge = {"ch_known": SimpleNamespace(id=7, reference="SHOP-7")}

    @hookimpl
    def order_for_charge(
        self, session: Any, tenant: Any, charge_id: str | None, payment_intent_id: Any
    ) -> Any:
        return self.by_charge.get(charge_id or "")


@dataclass
class Shop:
    harness: PayhookHarness
    listener: DisputeListener

    def send(self, event: dict[str, Any]) -> str:
        """Deliver over signed HTTP, run the handler, and return the run's status."""
        [run] = self.harness.send(event)
        return run.status

    def rerun(self, event: dict[str, Any]) -> str:
        """Run the event's handler again, as the core does after a crash mid-commit."""
        self.harness.rerun(event["id"])
        [run] = self.harness.runs(event["id"])
        return run.status

    def disputes(self) -> list[Dispute]:
        with self.harness.session() as session:
            return list(session.exec(select(Dispute).order_by(col(Dispute.id))))
