"""Hooks payhook-disputes calls; other plugins implement them with `@payhook.hookimpl`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from payhook import hookspec

if TYPE_CHECKING:
    from payhook import TenantConfig
    from sqlmodel import Session

    from .models import Dispute


@hookspec(firstresult=True)
def order_for_charge(
    session: Session, tenant: TenantConfig, charge_id: str | None, payment_intent_id: str | None
) -> Any:
    """The tenant's order that a disputed charge paid for, or None if this plugin does not know it.

    Return any object with `id` and `reference`. Called inside the dispute handler's
    transaction, with its session; read, do not write. The first non-None answer wins.
    """


@hookspec
def dispute_opened(dispute: Dispute, tenant: TenantConfig) -> None:
    """A dispute was recorded for the first time; called once, after its transaction committed.

    `dispute` is a detached snapshot; open a session of your own to change anything.
    """
