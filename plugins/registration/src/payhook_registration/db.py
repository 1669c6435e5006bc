"""The handlers' SQL: Core statements over the models' tables, run with `ctx.execute`.

Through the ORM, SQLAlchemy's own work for a payment (identity map, unit of work, result
objects, per-statement execution) cost many times the database's. The handlers need a few
statements each, so these are written once as Core expressions (columns and types still come
from the models) and run through payhook.sql: compiled once per dialect, executed on the
driver's connection in the run's transaction, committed by payhook with its success mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from payhook import HandlerContext, utcnow
from payhook.sql import Compiled, Statement, insert_keys
from sqlalchemy import ColumnElement, Table, bindparam, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from .models import MONEY, Order, OrderStatus, Payment, PaymentMethod, PaymentStatus

__all__ = ["OrderRow", "PaymentRow", "Tx"]

ORDERS: Table = Order.__table__  # type: ignore[attr-defined]
PAYMENTS: Table = Payment.__table__  # type: ignore[attr-defined]


class Tx:
    """One handler run's statements, in the transaction of its `ctx` (`ctx.execute`).

    On SQLite it takes the write lock first, as SELECT ... FOR UPDATE takes the order's row
    on PostgreSQL: the handler then decides on data nobody can change before its commit,
    and never loses the race to write (which would cost a re-run of the whole handler).
    """

    __slots__ = ("ctx", "dialect")

    def __init__(self, ctx: HandlerContext) -> None:
        # SQLite: the write lock now, before the order is read (PostgreSQL locks its row).
        ctx.lock_for_write()
        self.ctx = ctx
        bind = ctx.session.bind
        assert bind is not None
        # For converting the order's row only if a hook wants it (see OrderRow.snapshot).
        self.dialect: Dialect = bind.dialect

    # Orders

    def lock_order(self, order_id: int) -> OrderRow | None:
        cursor = self.ctx.execute(_LOCK_ORDER, order_id=order_id)
        row = cursor.fetchall()
        if not row:
            return None
        return OrderRow(row[0], cursor.description, _LOCK_ORDER.compiled(self.dialect))

    def pay_if_covered(self, order: OrderRow) -> bool:
        """A pending order whose captured payments cover its total becomes paid."""
        now = utcnow()
        if not self.ctx.changed(_PAY_IF_COVERED, order_id=order.id, now=now):
            return False
        order.moved(OrderStatus.PAID, now)
        return True

    def move_order(self, order: OrderRow, new: OrderStatus) -> None:
        """Set a status the state machine allowed (see states.can_move)."""
        now = utcnow()
        clears_hold = new in (OrderStatus.PAID, OrderStatus.CANCELLED)
        self.ctx.changed(
            _MOVE_CLEARING_HOLD if clears_hold else _MOVE, order_id=order.id, new_status=new.value, now=now
        )
        order.moved(new, now)

    def captured(self, order: OrderRow) -> tuple[Decimal, Decimal]:
        """What the order's captured payments brought in, and what of it went back."""
        [(received, refunded)] = self.ctx.rows(_CAPTURED_TOTALS, order_id=order.id)
        return received, refunded

    # Payments

    def payment_by_intent(self, intent_id: str) -> PaymentRow | None:
        return self._payment(_PAYMENT_BY_INTENT, intent_id=intent_id)

    def payment_by_charge(self, charge_id: str) -> PaymentRow | None:
        return self._payment(_PAYMENT_BY_CHARGE, charge_id=charge_id)

    def _payment(self, statement: Statement, **values: Any) -> PaymentRow | None:
        rows = self.ctx.rows(statement, **values)
        return PaymentRow(*rows[0]) if rows else None

    def add_payment(
        self,
        order: OrderRow,
        *,
        intent_id: str | None,
        charge_id: str | None,
        status: PaymentStatus,
        amount: Decimal,
        currency: str,
        failure_reason: str | None = None,
    ) -> PaymentRow | None:
        """A new Stripe payment; None when one for `intent_id` exists already (untouched)."""
        rows = self.ctx.rows(
            _ADD_PAYMENT,
            order_id=order.id,
            method=PaymentMethod.STRIPE.value,
            status=status.value,
            amount=amount,
            amount_refunded=Decimal(0),
            currency=currency,
            stripe_payment_intent_id=intent_id,
            stripe_charge_id=charge_id,
            failure_reason=failure_reason,
            created_at=utcnow(),
        )
        if not rows:
            return None
        return PaymentRow(rows[0][0], order.id, status.value, amount, Decimal(0))

    def payment_succeeded(
        self, payment: PaymentRow, amount: Decimal, currency: str, charge_id: str | None
    ) -> None:
        """An existing payment's money arrived (a charge id, if given, replaces the old one)."""
        self.ctx.changed(
            _PAYMENT_SUCCEEDED,
            payment_id=payment.id,
            new_amount=amount,
            new_currency=currency,
            charge_id=charge_id,
        )
        payment.status, payment.amount = PaymentStatus.SUCCEEDED.value, amount

    def payment_progressed(
        self, payment: PaymentRow, status: PaymentStatus, failure_reason: str | None
    ) -> None:
        self.ctx.changed(
            _PAYMENT_PROGRESS, payment_id=payment.id, new_status=status.value, reason=failure_reason
        )
        payment.status = status.value

    def payment_refunded(self, payment: PaymentRow, refunded: Decimal) -> None:
        """Record Stripe's running refund total; all of it back makes the payment refunded."""
        if refunded >= payment.amount:
            payment.status = PaymentStatus.REFUNDED.value
        self.ctx.changed(
            _PAYMENT_REFUNDED, payment_id=payment.id, refunded=refunded, new_status=payment.status
        )
        payment.amount_refunded = refunded


class OrderRow:
    """An order as its handler read it (and changed it); `snapshot()` is the hooks' `Order`."""

    __slots__ = (
        "_changes",
        "_compiled",
        "_description",
        "_raw",
        "currency",
        "id",
        "reference",
        "status",
        "tenant",
    )

    def __init__(self, raw: Sequence[Any], description: Any, compiled: Compiled) -> None:
        self.id: int = raw[0]
        self.tenant: str = raw[1]
        self.reference: str = raw[2]
        self.status: str = raw[3]
        self.currency: str = raw[4]
        # The rest (total, times) is converted only if a hook wants the snapshot.
        self._raw, self._description, self._compiled = raw, description, compiled
        self._changes: dict[str, Any] = {}

    def moved(self, new: OrderStatus, now: datetime) -> None:
        self.status = new.value
        self._changes.update(status=new.value, updated_at=now)
        if new in (OrderStatus.PAID, OrderStatus.CANCELLED):
            self._changes["hold_expires_at"] = None

    def snapshot(self) -> Order:
        """A detached `Order` with the values this run committed."""
        values = self._compiled.convert(self._description, self._raw)
        fields = dict(zip(_ORDER_FIELDS, values, strict=True))
        fields.update(self._changes)
        return Order(**fields)


class PaymentRow:
    """The columns of a payment the handlers decide on."""

    __slots__ = ("amount", "amount_refunded", "id", "order_id", "status")

    def __init__(
        self, id: int, order_id: int, status: str, amount: Decimal, amount_refunded: Decimal
    ) -> None:
        self.id = id
        self.order_id = order_id
        self.status = status
        self.amount = amount
        self.amount_refunded = amount_refunded


def _insert_ignoring_known_intents(dialect: Dialect) -> ClauseElement:
    # A payment for the intent may exist already (a processing one, or a replay): the
    # unique index then makes this insert nothing, and RETURNING says so, in one statement.
    dialect_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    return (
        dialect_insert(PAYMENTS)
        .on_conflict_do_nothing(index_elements=[PAYMENTS.c.stripe_payment_intent_id])
        .returning(PAYMENTS.c.id)
    )


def _captured(order_id: ColumnElement[Any]) -> ColumnElement[bool]:
    # Payments whose money arrived (a refunded payment did arrive, and some of it went back).
    # ORs, not IN: an IN list of constants would compile to an "expanding" parameter.
    captured = or_(
        PAYMENTS.c.status == PaymentStatus.SUCCEEDED.value, PAYMENTS.c.status == PaymentStatus.REFUNDED.value
    )
    return (PAYMENTS.c.order_id == order_id) & captured


_ORDER_COLUMNS = [
    ORDERS.c.id,
    ORDERS.c.tenant,
    ORDERS.c.reference,
    ORDERS.c.status,
    ORDERS.c.currency,
    ORDERS.c.total,
    ORDERS.c.hold_expires_at,
    ORDERS.c.created_at,
    ORDERS.c.updated_at,
]
_ORDER_FIELDS = [column.key for column in _ORDER_COLUMNS]

# FOR UPDATE (PostgreSQL): two payments of one order, handled at once, cannot both miss the
# other when they add up what has been paid; the second waits for the first's commit.
_LOCK_ORDER = Statement(select(*_ORDER_COLUMNS).where(ORDERS.c.id == bindparam("order_id")).with_for_update())

_NOW = bindparam("now", type_=ORDERS.c.updated_at.type)

# Stored amounts have three decimals, so on PostgreSQL `total <= paid + half a thousandth` is
# `total <= paid`; on SQLite, which keeps NUMERIC as floating point, it also forgives a sum's
# rounding error (the ORM rounded each amount to three decimals before adding them up).
_HALF_A_THOUSANDTH = literal(Decimal("0.0005"), MONEY)
_PAID_IN = (
    select(func.coalesce(func.sum(PAYMENTS.c.amount - PAYMENTS.c.amount_refunded), 0))
    .where(_captured(ORDERS.c.id))
    .scalar_subquery()
)
_PAY_IF_COVERED = Statement(
    update(ORDERS)
    .where(
        ORDERS.c.id == bindparam("order_id"),
        ORDERS.c.status == OrderStatus.PENDING.value,
        ORDERS.c.total <= _PAID_IN + _HALF_A_THOUSANDTH,
    )
    .values(status=OrderStatus.PAID.value, updated_at=_NOW, hold_expires_at=None)
)
_MOVE = Statement(
    update(ORDERS)
    .where(ORDERS.c.id == bindparam("order_id"))
    .values(status=bindparam("new_status", type_=ORDERS.c.status.type), updated_at=_NOW)
)
_MOVE_CLEARING_HOLD = Statement(
    update(ORDERS)
    .where(ORDERS.c.id == bindparam("order_id"))
    .values(status=bindparam("new_status", type_=ORDERS.c.status.type), updated_at=_NOW, hold_expires_at=None)
)
_CAPTURED_TOTALS = Statement(
    select(
        func.coalesce(func.sum(PAYMENTS.c.amount), 0).label("received"),
        func.coalesce(func.sum(PAYMENTS.c.amount_refunded), 0).label("refunded"),
    ).where(_captured(bindparam("order_id", type_=PAYMENTS.c.order_id.type)))
)

_PAYMENT_COLUMNS = [
    PAYMENTS.c.id,
    PAYMENTS.c.order_id,
    PAYMENTS.c.status,
    PAYMENTS.c.amount,
    PAYMENTS.c.amount_refunded,
]
_PAYMENT_BY_INTENT = Statement(
    select(*_PAYMENT_COLUMNS).where(PAYMENTS.c.stripe_payment_intent_id == bindparam("intent_id"))
)
_PAYMENT_BY_CHARGE = Statement(
    select(*_PAYMENT_COLUMNS).where(PAYMENTS.c.stripe_charge_id == bindparam("charge_id"))
)
_ADD_PAYMENT = Statement(_insert_ignoring_known_intents, keys=insert_keys(PAYMENTS))
_PAYMENT_SUCCEEDED = Statement(
    update(PAYMENTS)
    .where(PAYMENTS.c.id == bindparam("payment_id"))
    .values(
        status=PaymentStatus.SUCCEEDED.value,
        amount=bindparam("new_amount", type_=MONEY),
        currency=bindparam("new_currency", type_=PAYMENTS.c.currency.type),
        stripe_charge_id=func.coalesce(
            bindparam("charge_id", type_=PAYMENTS.c.stripe_charge_id.type), PAYMENTS.c.stripe_charge_id
        ),
        failure_reason=None,
    )
)
_PAYMENT_PROGRESS = Statement(
    update(PAYMENTS)
    .where(PAYMENTS.c.id == bindparam("payment_id"))
    .values(
        status=bindparam("new_status", type_=PAYMENTS.c.status.type),
        failure_reason=bindparam("reason", type_=PAYMENTS.c.failure_reason.type),
    )
)
_PAYMENT_REFUNDED = Statement(
    update(PAYMENTS)
    .where(PAYMENTS.c.id == bindparam("payment_id"))
    .values(
        amount_refunded=bindparam("refunded", type_=MONEY),
        status=bindparam("new_status", type_=PAYMENTS.c.status.type),
    )
)
