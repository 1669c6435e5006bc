"""Helpers for payhook-registration's tests: the tenants, a recorder of the plugin's hooks,
and `Conference`, the harness plus shortcuts.

They live here, not in conftest.py, so that test modules import them by a name no other
suite uses: every suite can then be collected in one pytest run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from payhook import hookimpl
from sqlmodel import col, select

from payhook_registration.models import Order, Payment
from payhook_registration.orders import create_order

if TYPE_CHECKING:
    from payhook.testing import PayhookHarness

TENANT = "pycon"
OTHER = "djangocon"


class HookRecorder:
    """Another plugin, enabled for both tenants, that implements the registration hooks."""

    def __init__(self) -> None:
        self.paid: list[tuple[int, str, str]] = []
        self.attention: list[tuple[int, str, str]] = []

    @hookimpl
    def order_paid(self, order: Order, tenant: Any) -> None:
        assert order.id is not None
        self.paid.append((order.id, order.status, tenant.slug))

    @hookimpl
    def order_needs_attention(self, order: Order, reason: str) -> None:
        assert order.id is not None
        self.attention.append((order.id, order.status, reason))


@dataclass
class Conference:
    """The harness plus the shortcuts these tests keep needing."""

    harness: PayhookHarness
    hooks: HookRecorder
    _intents: int = field(default=0)

    def order(self, total: str = "20.00", currency: str = "usd", *, tenant: str = TENANT, **kw: Any) -> int:
        with self.harness.session() as session:
            reference = f"{tenant}-{len(session.exec(select(Order)).all()) + 1}"
            order = create_order(
                session, tenant=tenant, reference=reference, total=total, currency=currency, **kw
            )
            session.commit()
            assert order.id is not None
            return order.id

    def get(self, order_id: int) -> Order:
        with self.harness.session() as session:
            order = session.get(Order, order_id)
            assert order is not None
            return order

    def payments(self, order_id: int | None = None) -> list[Payment]:
        query = select(Payment).order_by(col(Payment.id))
        if order_id is not None:
            query = query.where(Payment.order_id == order_id)
        with self.harness.session() as session:
            return list(session.exec(query))

    def send(self, event: dict[str, Any], *, tenant: str = TENANT, expect: str = "accepted") -> str:
        """Deliver over signed HTTP, run the handlers, and return the run's status."""
        [run] = self.harness.send(event, tenant=tenant, expect=expect)
        return run.status

    def rerun(self, event: dict[str, Any]) -> str:
        """Run the event's handler again, succeeded or skipped, as after a crash mid-commit."""
        self.harness.rerun(event["id"])
        [run] = self.harness.runs(event["id"])
        return run.status

    def last_error(self, event: dict[str, Any]) -> str:
        """The run's `last_error`: why it is dead, or why it was skipped."""
        [run] = self.harness.runs(event["id"])
        return run.last_error or ""

    def skipped(self) -> list[tuple[str, str]]:
        """(Stripe event id, reason) of every skipped run, oldest first."""
        events = {event.id: event.stripe_event_id for event in self.harness.events()}
        runs = self.harness.runs()
        return [(events[run.event_id], run.last_error or "") for run in runs if run.status == "skipped"]

    def new_intent_id(self) -> str:
        self._intents += 1
        return f"pi_test_{self._intents:04d}"
