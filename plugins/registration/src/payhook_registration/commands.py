"""`payhook registration orders create|list`: orders from the command line.

For organisers trying payhook out: make a test order, pay it with a test event, and see it
paid, without writing Python. Exit statuses as payhook's own commands: 0 done, 1 a problem
(the store cannot be read, the reference is taken), 2 a usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

import click
from payhook import Config, ConfigError, UnknownCurrency, load_config, quantize, to_minor_units
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col

from .models import Order, OrderStatus, Payment, PaymentStatus
from .orders import create_order

__all__ = ["registration"]

EXIT_PROBLEM, EXIT_USAGE = 1, 2
PLUGIN = "registration"

config_option = click.option(
    "--config",
    envvar="PAYHOOK_CONFIG",
    required=True,
    metavar="FILE",
    help="The TOML configuration file (or $PAYHOOK_CONFIG).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def registration() -> None:
    """payhook-registration: orders and their payments."""


@registration.group()
def orders() -> None:
    """Orders: create a test order, list orders with their status."""


@orders.command("create")
@config_option
@click.option("--tenant", required=True, help="The tenant (its slug) the order belongs to.")
@click.option("--reference", required=True, help="The order's reference, unique per tenant.")
@click.option("--currency", required=True, help="Three-letter ISO code, e.g. usd.")
@click.option("--amount", required=True, help="The total in major units, e.g. 350.00.")
@json_option
def create(config: str, tenant: str, reference: str, currency: str, amount: str, as_json: bool) -> None:
    """Create a pending order; Stripe's events for it (metadata.order_id) then pay it."""
    loaded = _load(config)
    _check_tenant(loaded, tenant)
    total = _total(amount, currency)
    with _session(loaded) as session:
        try:
            order = create_order(session, tenant=tenant, reference=reference, total=total, currency=currency)
            session.commit()
        except IntegrityError:
            _fail(f"tenant {tenant!r} has an order {reference!r} already; choose another --reference")
        shown = _as_dict(order, Decimal(0))
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    money = f"{shown['total']} {shown['currency'].upper()}"
    click.echo(f"created order {shown['id']} ({_printable(reference)}, {money}) for {tenant}")
    minor = to_minor_units(total, currency)
    click.echo(
        f"pay it with a payment intent of amount={minor}, currency={shown['currency']}, "
        f"metadata[order_id]={shown['id']}",
        err=True,
    )


@orders.command("list")
@config_option
@click.option("--tenant", help="Only this tenant's orders.")
@click.option(
    "--status",
    type=click.Choice([status.value for status in OrderStatus]),
    help="Only orders with this status.",
)
@click.option(
    "--limit", type=click.IntRange(1, 100000), default=50, show_default=True, help="Show at most N."
)
@json_option
def list_orders(config: str, tenant: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Orders, newest first, with their status and what their payments brought in."""
    loaded = _load(config)
    if tenant is not None:
        _check_tenant(loaded, tenant)
    query = select(Order).order_by(col(Order.id).desc()).limit(limit)
    if tenant is not None:
        query = query.where(col(Order.tenant) == tenant)
    if status is not None:
        query = query.where(col(Order.status) == status)
    with _session(loaded) as session:
        found = list(session.scalars(query))
        paid = _paid(session, [order.id for order in found if order.id is not None])
        shown = [_as_dict(order, paid.get(order.id or 0, Decimal(0))) for order in found]
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    headers = ["ID", "TENANT", "REFERENCE", "STATUS", "TOTAL", "PAID", "CURRENCY", "CREATED (UTC)"]
    rows = [
        [
            str(row["id"]),
            _printable(row["tenant"]),
            _printable(row["reference"]),
            row["status"],
            row["total"],
            row["paid"],
            row["currency"],
            row["created_at"][:19].replace("T", " "),
        ]
        for row in shown
    ]
    click.echo(_table(headers, rows))


def _load(path: str) -> Config:
    """The configuration, without the webhook secrets (these commands verify nothing)."""
    try:
        return load_config(path, require_secrets=False)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_USAGE)


def _check_tenant(config: Config, tenant: str) -> None:
    known = config.tenants.get(tenant)
    if known is None:
        names = ", ".join(sorted(config.tenants)) or "none"
        _fail(f"no tenant {tenant!r} in {config.source} (tenants: {names})", EXIT_USAGE)
    if PLUGIN not in known.plugins:
        _fail(
            f"tenant {tenant!r} does not enable the registration plugin; add it to its plugins",
            EXIT_USAGE,
        )


def _total(amount: str, currency: str) -> Decimal:
    try:
        total = Decimal(amount)
    except InvalidOperation:
        _fail(f"--amount {amount!r} is not a number", EXIT_USAGE)
    if not total.is_finite() or total <= 0:
        _fail(f"--amount must be a number above 0, got {amount!r}", EXIT_USAGE)
    try:
        to_minor_units(total, currency)  # a known currency, and no more decimals than it has
    except (UnknownCurrency, ValueError) as exc:
        _fail(f"--amount {amount!r} --currency {currency!r}: {exc}", EXIT_USAGE)
    return quantize(total, currency)


@contextmanager
def _session(config: Config) -> Iterator[Session]:
    engine = _engine(config)
    try:
        with Session(engine) as session:
            yield session
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        _fail(
            f"could not use the database ({reason}); is it reachable, and up to date (`payhook db upgrade`)?"
        )
    finally:
        engine.dispose()


def _engine(config: Config) -> Engine:
    url = config.database.url
    if not url.startswith(("sqlite", "postgresql")):
        _fail(
            f"[database] url {url.split(':')[0]!r} is not supported here; use your host's own tools",
            EXIT_USAGE,
        )
    database = make_url(url).database
    if config.database.is_sqlite and database not in (None, "", ":memory:") and not Path(database).exists():
        # Connecting would create an empty file; say what is wrong instead.
        _fail(f"no database at {database}; check [database] url, or run `payhook db upgrade`")
    return create_engine(url)


def _paid(session: Session, order_ids: Sequence[int]) -> dict[int, Decimal]:
    """Each order's captured payments, net of refunds."""
    if not order_ids:
        return {}
    captured = col(Payment.status).in_([PaymentStatus.SUCCEEDED.value, PaymentStatus.REFUNDED.value])
    net = func.sum(col(Payment.amount) - col(Payment.amount_refunded))
    query = (
        select(col(Payment.order_id), net)
        .where(col(Payment.order_id).in_(order_ids), captured)
        .group_by(col(Payment.order_id))
    )
    return {order_id: Decimal(str(amount)) for order_id, amount in session.execute(query)}


def _as_dict(order: Order, paid: Decimal) -> dict[str, Any]:
    return {
        "id": order.id,
        "tenant": order.tenant,
        "reference": order.reference,
        "status": order.status,
        "total": str(quantize(Decimal(order.total), order.currency)),
        "paid": str(quantize(paid, order.currency)),
        "currency": order.currency,
        "created_at": order.created_at.isoformat(),
    }


def _printable(text: str) -> str:
    """Control and format characters escaped, so that no stored value moves the cursor."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )


def _fail(message: str, status: int = EXIT_PROBLEM) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)
