"""Statements compiled once for one dialect and run on the raw DBAPI cursor.

The core's own hot statements (the ingest write, the run transitions) skip SQLAlchemy's
per-call execution machinery, which costs several times the driver's own work here. They
are still written as Core expressions over the models' tables, so column names and types
come from one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

__all__ = ["Compiled", "insert_keys"]


def insert_keys(table: Table, *, skip: Iterable[str] = ("id",)) -> list[str]:
    """Every column an INSERT into `table` sets: all but the generated primary key."""
    skipped = set(skip)
    return [column.key for column in table.columns if column.key not in skipped]


class Compiled:
    """One statement compiled for `dialect`, taking its parameters by name.

    Parameters go through their column type's bind conversion (say, aware datetimes to
    naive UTC text on SQLite), as SQLAlchemy would do, but decided once here.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: list[str] | None = None) -> None:
        # Constant IN lists would compile to "expanding" parameters that only SQLAlchemy's own
        # execution fills in: write them as ORs of equalities (see runs.status_in).
        compiled: Any = statement.compile(dialect=dialect, column_keys=keys)
        self.sql = str(compiled)
        # qmark drivers (sqlite3) take a tuple in this order; pyformat ones (psycopg) a dict.
        positional = getattr(compiled, "positiontup", None)
        self.order: list[str] | None = list(positional) if positional else None
        # Values written into the statement (say, status = 'dead', or NULL) are bind
        # parameters too; the caller gives the required ones.
        self.constants: dict[str, Any] = {}
        self.converters: dict[str, Callable[[Any], Any]] = {}
        for name, value in compiled.params.items():
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:
                self.constants[name] = convert(value) if convert is not None and value is not None else value
            elif convert is not None:
                self.converters[name] = convert

    def params(self, values: dict[str, Any]) -> Any:
        merged = {**self.constants, **values}
        for name, convert in self.converters.items():
            value = merged.get(name)
            if value is not None:
                merged[name] = convert(value)
        return merged if self.order is None else tuple(merged[name] for name in self.order)
