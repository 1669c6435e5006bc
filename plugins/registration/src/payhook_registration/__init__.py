"""payhook-registration: orders paid, refunded and cancelled by their Stripe events."""

from __future__ import annotations

import click
from payhook import PluginHost, Register, TenantConfig, hookimpl
from sqlmodel import Session

from . import checkout, commands, hookspecs, lookup, payments, refunds
from .models import Order
from .settings import Settings


@hookimpl
def startup(host: PluginHost) -> None:
    host.add_hookspecs(hookspecs)  # payhook ignores a repeat (an app started twice)


@hookimpl
def plugin_settings() -> type[Settings]:
    return Settings


@hookimpl
def register_handlers(register: Register) -> None:
    register("payment_intent.succeeded", payments.intent_succeeded)
    register("payment_intent.processing", payments.intent_processing)
    register("payment_intent.payment_failed", payments.intent_failed)
    register("payment_intent.canceled", payments.intent_failed)
    register("charge.refunded", refunds.charge_refunded)
    register("checkout.session.completed", checkout.session_completed)
    register("checkout.session.async_payment_succeeded", checkout.session_completed)
    register("checkout.session.expired", checkout.session_expired)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """`payhook registration orders create|list`."""
    cli.add_command(commands.registration)


@hookimpl
def order_for_charge(
    session: Session, tenant: TenantConfig, charge_id: str | None, payment_intent_id: str | None
) -> Order | None:
    """Answers payhook-disputes: which of this tenant's orders a disputed charge paid for."""
    return lookup.order_for_charge(session, tenant, charge_id, payment_intent_id)
