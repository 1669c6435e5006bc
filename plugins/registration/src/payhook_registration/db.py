"""The handlers' SQL: Core statements over the models' tables, run on the run's connection.

Through the ORM, SQLAlchemy's own work for a payment (identity map, unit of work, result
objects, per-statement execution) cost many times the database's. The handlers need a few
statements each, so these are written once as Core expressions (columns and types still come
from the models), compiled once per dialect, and executed on the DBAPI connection of
`ctx.session`: the same transaction, committed by payhook with the run's success mark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from payhook import HandlerContext, utcnow
from sqlalchemy import ColumnElement, Table, bindparam, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from .models import MONEY, Order, OrderStatus, Payment, PaymentMethod, PaymentStatus

__all__ = ["OrderRow", "PaymentRow", "Statement", "Tx"]

ORDERS: Table = Order.__table__  # type: ignore[attr-defined]
PAYMENTS: Table = Payment.__table__  # type: ignore[attr-defined]

Build = Callable[[Dialect], ClauseElement]


class _Compiled:
    """A statement compiled for one dialect, with its parameters' conversions decided once."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Sequence[str] | None) -> None:
        compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys) if keys else None)
        self.sql = str(compiled)
        # Values written into the statement (status = 'pending', NULL) are bind parameters
        # too: converted once here. The others are converted per call, as SQLAlchemy would.
        constants: dict[str, Any] = {}
        converters: dict[str, Callable[[Any], Any] | None] = {}
        for name, value in compiled.params.items():
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:
                constants[name] = convert(value) if convert is not None and value is not None else value
            else:
                converters[name] = convert
        # qmark drivers (sqlite3) take a sequence in `positiontup` order; pyformat ones
        # (psycopg) a dict. Either way the constants are filled in already.
        positional = compiled.positiontup
        self.template: list[Any] | dict[str, Any]
        # (where in the parameters, which value, its conversion)
        self.slots: list[tuple[Any, str, Callable[[Any], Any] | None]]
        if positional:
            self.template = [constants.get(name) for name in positional]
            self.slots = [
                (i, name, converters[name]) for i, name in enumerate(positional) if name in converters
            ]
        else:
            self.template = constants
            self.slots = [(name, name, convert) for name, convert in converters.items()]
        exported = getattr(statement, "exported_columns", ())
        self.types = [column.type for column in exported]
        self.dialect = dialect
        # Result conversions need the driver's column types: known after the first execution.
        self.processors: list[Callable[[Any], Any] | None] | None = None

    def params(self, values: dict[str, Any]) -> Any:
        params: Any = self.template.copy()
        for slot, name, convert in self.slots:
            value = values[name]
            params[slot] = value if convert is None or value is None else convert(value)
        return params

    def convert(self, description: Any, row: Sequence[Any]) -> list[Any]:
        """A result row's values as SQLAlchemy would give them (say, Decimals on SQLite)."""
        processors = self.processors
        if processors is None:
            processors = self.processors = [
                kind.dialect_impl(self.dialect).result_processor(self.dialect, column[1])
                for kind, column in zip(self.types, description, strict=True)
            ]
        return [value if p is None else p(value) for p, value in zip(processors, row, strict=True)]


class Statement:
    """A Core statement, compiled the first time each dialect runs it."""

    def __init__(self, statement: ClauseElement | Build, keys: Sequence[str] | None = None) -> None:
        self._build: Build = statement if callable(statement) else (lambda _dialect: statement)
        self._keys = keys
        self._compiled: dict[type[Dialect], _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(type(dialect))
        if compiled is None:
            compiled = self._compiled[type(dialect)] = _Compiled(self._build(dialect), dialect, self._keys)
        return compiled


class Tx:
    """One handler run's statements, in the transaction of its `ctx.session`.

    On SQLite it takes the write lock first, as SELECT ... FOR UPDATE takes the order's row
    on PostgreSQL: the handler then decides on data nobody can change before its commit,
    and never loses the race to write (which would cost a re-run of the whole handler).
    """

    __slots__ = ("_error", "_execute", "ctx", "dialect")

    def __init__(self, ctx: HandlerContext) -> None:
        # SQLite: the write lock now, before the order is read (PostgreSQL locks its row).
        ctx.lock_for_write()
        connection = ctx.session.connection()
        self.ctx = ctx
        self.dialect = connection.dialect
        self._execute: Callable[[str, Any], Any] = connection.connection.driver_connection.execute  # type: ignore[union-attr]
        self._error: type[Exception] = self.dialect.loaded_dbapi.Error

    def run(self, statement: Statement, **values: Any) -> Any:
        """Execute; the DBAPI cursor. Driver errors are raised as SQLAlchemy's, as the ORM did."""
        compiled = statement.compiled(self.dialect)
        params = compiled.params(values)
        try:
            return self._execute(compiled.sql, params)
        except self._error as exc:
            raise DBAPIError.instance(compiled.sql, params, exc, self._error, dialect=self.dialect) from exc

    def rows(self, statement: Statement, **values: Any) -> list[Any]:
        # fetchall: a statement left half-read on SQLite would stay active into the commit.
        return list(self.run(statement, **values).fetchall())

    def changed(self, statement: Statement, **values: Any) -> int:
        return int(self.run(statement, **values).rowcount)

    # Orders

    def lock_order(self, order_id: int) -> OrderRow | None:
        cursor = self.run(_LOCK_ORDER, order_id=order_id)
        row = cursor.fetchall()
        if not row:
            return None
        return OrderRow(row[0], cursor.description, _LOCK_ORDER.compiled(self.dialect))

    def pay_if_covered(self, order: OrderRow) -> bool:
        """A pending order whose captured payments cover its total becomes paid."""
        now = utcnow()
        if not self.changed(_PAY_IF_COVERED, order_id=order.id, now=now):
            return False
        order.moved(OrderStatus.PAID, now)
        return True

    def move_order(self, order: OrderRow, new: OrderStatus) -> None:
        """Set a status the state machine allowed (see states.can_move)."""
        now = utcnow()
        clears_hold = new in (OrderStatus.PAID, OrderStatus.CANCELLED)
        self.changed(
            _MOVE_CLEARING_HOLD if clears_hold else _MOVE, order_id=order.id, new_status=new.value, now=now
        )
        order.moved(new, now)

    def captured(self, order: OrderRow) -> tuple[Decimal, Decimal]:
        """What the order's captured payments brought in, and what of it went back."""
        cursor = self.run(_CAPTURED_TOTALS, order_id=order.id)
        received, refunded = _CAPTURED_TOTALS.compiled(self.dialect).convert(
            cursor.description, cursor.fetchall()[0]
        )
        return received, refunded

    # Payments

    def payment_by_intent(self, intent_id: str) -> PaymentRow | None:
        return self._payment(_PAYMENT_BY_INTENT, intent_id=intent_id)

    def payment_by_charge(self, charge_id: str) -> PaymentRow | None:
        return self._payment(_PAYMENT_BY_CHARGE, charge_id=charge_id)

    def _payment(self, statement: Statement, **values: Any) -> PaymentRow | None:
        cursor = self.run(statement, **values)
        rows = cursor.fetchall()
        if not rows:
            return None
        return PaymentRow(*statement.compiled(self.dialect).convert(cursor.description, rows[0]))

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
        rows = self.rows(
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
        self.changed(
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
        self.changed(_PAYMENT_PROGRESS, payment_id=payment.id, new_status=status.value, reason=failure_reason)
        payment.status = status.value

    def payment_refunded(self, payment: PaymentRow, refunded: Decimal) -> None:
        """Record Stripe's running refund total; all of it back makes the payment refunded."""
        if refunded >= payment.amount:
            payment.status = PaymentStatus.REFUNDED.value
        self.changed(_PAYMENT_REFUNDED, payment_id=payment.id, refunded=refunded, new_status=payment.status)
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

    def __init__(self, raw: Sequence[Any], description: Any, compiled: _Compiled) -> None:
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
_ADD_PAYMENT = Statement(
    _insert_ignoring_known_intents, keys=[column.key for column in PAYMENTS.columns if column.key != "id"]
)
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
