"""Statements compiled once per dialect and run on the driver's cursor (see payhook.sql).

SQLAlchemy's per-call execution machinery costs several times the driver's own work for a
short statement. The core's hot statements (the ingest write, the run transitions) and
handlers' `ctx.execute` share this one implementation; payhook.sql is its public face.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement

from payhook.store.sqlite import TRANSACTION_STATE, WriteGate, begin_lazily, is_read_only

__all__ = [
    "Build",
    "Compiled",
    "Executor",
    "Statement",
    "driver_error",
    "drop_if_broken",
    "insert_keys",
]

# A statement that differs by dialect (say, an INSERT ... ON CONFLICT): built per dialect.
Build = Callable[[Dialect], ClauseElement]
Convert = Callable[[Any], Any]


def insert_keys(table: Table, *, skip: Iterable[str] = ("id",)) -> list[str]:
    """Every column an INSERT into `table` sets: all but the generated primary key."""
    skipped = set(skip)
    return [column.key for column in table.columns if column.key not in skipped]


class Compiled:
    """One statement compiled for `dialect`, taking its parameters by name.

    Parameters go through their column type's bind conversion (say, aware datetimes to
    naive UTC text on SQLite, Decimals to strings), as SQLAlchemy would do, but decided
    once here. Values written into the statement (status = 'paid', NULL) are bind
    parameters too, converted once; the caller gives every other one, by name.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Sequence[str] | None = None) -> None:
        # Constant IN lists would compile to "expanding" parameters that only SQLAlchemy's own
        # execution fills in: write them as ORs of equalities.
        compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys) if keys else None)
        self.sql = str(compiled)
        self.dialect = dialect
        # SQLite: whether the statement needs the write lock (see sqlite.begin_lazily).
        self.writes = not is_read_only(self.sql)
        constants: dict[str, Any] = {}
        converters: dict[str, Convert | None] = {}
        for name, value in compiled.params.items():
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:
                constants[name] = convert(value) if convert is not None and value is not None else value
            else:
                converters[name] = convert
        # qmark drivers (sqlite3) take a sequence in `positiontup` order (a name may come
        # twice); pyformat ones (psycopg) a dict. Either way the constants are in already.
        positional = getattr(compiled, "positiontup", None)
        self._template: list[Any] | dict[str, Any]
        # (where in the parameters, which value, its conversion)
        self._slots: list[tuple[Any, str, Convert | None]]
        if positional:
            self._template = [constants.get(name) for name in positional]
            self._slots = [
                (i, name, converters[name]) for i, name in enumerate(positional) if name in converters
            ]
        else:
            self._template = constants
            self._slots = [(name, name, convert) for name, convert in converters.items()]
        self._types = [column.type for column in getattr(statement, "exported_columns", ())]
        # Result conversions need the driver's column types: known after the first execution.
        # None until then; an empty list when no column needs converting.
        self._processors: list[Convert | None] | None = None

    def params(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters for `values` (by name; names the statement lacks are ignored)."""
        params: Any = self._template.copy()
        for slot, name, convert in self._slots:
            value = values[name]
            params[slot] = value if convert is None or value is None else convert(value)
        return params

    def convert(self, description: Any, row: Sequence[Any]) -> list[Any]:
        """A result row's values as SQLAlchemy would give them (say, Decimals on SQLite)."""
        processors = self._result_processors(description)
        if not processors:
            return list(row)
        return [value if p is None else p(value) for p, value in zip(processors, row, strict=True)]

    def rows(self, cursor: Any) -> list[Any]:
        """Every row `cursor` has left, converted; the driver's own rows when nothing needs it."""
        rows: list[Any] = cursor.fetchall()
        if not rows:
            return rows
        processors = self._result_processors(cursor.description)
        if not processors:
            return rows
        return [
            tuple([value if p is None else p(value) for p, value in zip(processors, row, strict=True)])
            for row in rows
        ]

    def _result_processors(self, description: Any) -> list[Convert | None]:
        processors = self._processors
        if processors is None:
            dialect = self.dialect
            if description is None or len(description) != len(self._types):
                processors = []  # not a Core select over typed columns (say, text()): as read
            else:
                processors = [
                    kind.dialect_impl(dialect).result_processor(dialect, column[1])
                    for kind, column in zip(self._types, description, strict=True)
                ]
                if all(p is None for p in processors):
                    processors = []
            self._processors = processors
        return processors


class Statement:
    """A Core statement (or a `Build` per dialect), compiled the first time each dialect runs it.

    `keys`: for an INSERT, the columns it sets (each a parameter of that name); see
    `insert_keys`. Make statements once, at import: compiling is the expensive part.
    """

    __slots__ = ("_build", "_compiled", "_keys")

    def __init__(self, statement: ClauseElement | Build, keys: Sequence[str] | None = None) -> None:
        self._build: Build = statement if callable(statement) else (lambda _dialect: statement)
        self._keys = keys
        self._compiled: dict[type[Dialect], Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        compiled = self._compiled.get(type(dialect))
        if compiled is None:
            compiled = self._compiled[type(dialect)] = Compiled(self._build(dialect), dialect, self._keys)
        return compiled


class Executor:
    """Runs Statements on the driver connection under `connection`, inside its transaction.

    A handler's: see `ctx.execute`. On SQLite (`gate` given) a statement first begins the
    transaction, or takes the write lock, as SQLAlchemy's statements do there (see
    sqlite.begin_lazily). Driver errors are raised as SQLAlchemy raises them (`driver_error`).
    """

    __slots__ = ("_error", "_execute", "_gate", "_info", "connection", "dialect")

    def __init__(self, connection: Connection, gate: WriteGate | None) -> None:
        self.connection = connection
        self.dialect = connection.dialect
        driver: Any = connection.connection.driver_connection
        self._execute: Callable[[str, Any], Any] = driver.execute
        self._error: type[Exception] = self.dialect.loaded_dbapi.Error
        self._gate = gate
        self._info = connection.info

    def execute(self, statement: Statement, values: Mapping[str, Any]) -> Any:
        """Run `statement` with `values`; the driver's cursor."""
        compiled = statement.compiled(self.dialect)
        gate = self._gate
        if gate is not None and self._info.get(TRANSACTION_STATE) != "write":
            begin_lazily(self.connection, gate, writes=compiled.writes)
        params = compiled.params(values)
        try:
            return self._execute(compiled.sql, params)
        except self._error as exc:
            raise driver_error(exc, self.connection, compiled.sql, params) from exc

    def rows(self, statement: Statement, values: Mapping[str, Any]) -> list[Any]:
        # Read to the end: a statement left half-read on SQLite stays active into the commit.
        return statement.compiled(self.dialect).rows(self.execute(statement, values))

    def changed(self, statement: Statement, values: Mapping[str, Any]) -> int:
        return int(self.execute(statement, values).rowcount)


def drop_if_broken(connection: Connection, exc: BaseException, dbapi_connection: Any = None) -> bool:
    """When the driver's `exc` says the connection broke, invalidate `connection` (the pool
    never lends it again) and return True. SQLAlchemy does this for its own statements;
    statements run on the driver's cursor must ask. `dbapi_connection`: the driver connection
    the error came from, if not `connection`'s own."""
    dialect = connection.dialect
    if dbapi_connection is None:
        dbapi_connection = connection.connection.dbapi_connection
    if not dialect.is_disconnect(exc, dbapi_connection, None):  # type: ignore[arg-type]
        return False
    connection.invalidate(exc)
    return True


def driver_error(exc: Exception, connection: Connection, statement: str, params: Any) -> StatementError:
    """The driver's `exc`, raised by `statement` on `connection`, as SQLAlchemy raises it.

    That is the error the same statement through the ORM would have given (IntegrityError
    for a unique key, OperationalError for a lock or a lost server, ...), so what payhook
    recognises there (a lost SQLite write race, a database that went away) and what it
    records for a failed run is the same on either path. A broken connection is dropped.
    """
    broken = drop_if_broken(connection, exc)
    return DBAPIError.instance(
        statement,
        tuple(params) if isinstance(params, list) else params,  # shown as SQLAlchemy shows them
        exc,
        connection.dialect.loaded_dbapi.Error,
        hide_parameters=connection.engine.hide_parameters,
        connection_invalidated=broken,
        dialect=connection.dialect,
    )
