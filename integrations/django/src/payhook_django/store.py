"""payhook's store on a Django database, and each handler run's transaction on Django's
own connection: the handler's Django ORM writes, its `ctx.session` writes and the run's
success mark commit together in one `transaction.atomic()`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.db import close_old_connections, connections, transaction
from payhook.config import DatabaseConfig
from payhook.store.compiled import Executor
from payhook.store.engine import HandlerTransaction, Store
from sqlalchemy import URL, Engine, create_engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from payhook_django.site import ensure_django

__all__ = ["DjangoStore", "DjangoTransaction", "alias_of", "sqlalchemy_url"]

# libpq connection parameters Django's PostgreSQL OPTIONS may hold that payhook's engine takes too.
LIBPQ_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "application_name",
    "target_session_attrs",
    "passfile",
    "service",
)


def alias_of(url: str) -> str:
    """`django` is Django's `default` database; `django:<alias>` names another."""
    _, _, alias = url.partition(":")
    return alias or "default"


def sqlalchemy_url(alias: str) -> str:
    """The SQLAlchemy URL of the Django database `alias` (PostgreSQL or SQLite)."""
    if alias not in connections.settings:
        known = ", ".join(sorted(connections.settings)) or "none"
        raise LookupError(f"payhook's [database] url names Django database {alias!r}; DATABASES has {known}")
    wrapper = connections[alias]
    given = wrapper.settings_dict
    if wrapper.vendor == "sqlite":
        name = str(given["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise ValueError(f"Django database {alias!r} is in memory: payhook needs a file it can share")
        return f"sqlite:///{name}"
    if wrapper.vendor == "postgresql":
        options = given.get("OPTIONS") or {}
        query = {key: str(options[key]) for key in LIBPQ_OPTIONS if key in options}
        url = URL.create(
            "postgresql+psycopg",
            username=given.get("USER") or None,
            password=given.get("PASSWORD") or None,
            host=given.get("HOST") or None,
            port=int(given["PORT"]) if given.get("PORT") else None,
            database=given.get("NAME") or None,
            query=query,
        )
        return url.render_as_string(hide_password=False)
    raise ValueError(f"Django database {alias!r} is {wrapper.vendor}; payhook supports PostgreSQL and SQLite")


class DjangoStore(Store):
    """payhook's Store on Django's database `alias`, with the same connection settings.

    The core's own transactions (ingest, claims, failures) use payhook's engine, as with any
    store; handler runs use Django's connection of the thread they run in (DjangoTransaction).
    """

    def __init__(self, config: DatabaseConfig, **options: Any) -> None:
        ensure_django()
        self.alias = alias_of(config.url)
        super().__init__(replace(config, url=sqlalchemy_url(self.alias)), **options)
        # `ctx.session` works on the running thread's Django connection: lent, never
        # closed, committed or rolled back by SQLAlchemy (Django's atomic() does that).
        self.session_engine: Engine = create_engine(
            self.engine.url,
            creator=self._lend_connection,
            poolclass=NullPool,
            pool_reset_on_return=None,
        )

    def _lend_connection(self) -> Any:
        wrapper = connections[self.alias]
        wrapper.ensure_connection()
        return LentConnection(wrapper.connection)

    def handler_transaction(self, *, lock_early: bool = False) -> HandlerTransaction:
        return DjangoTransaction(self, lock_early=lock_early)

    def dispose(self) -> None:
        self.session_engine.dispose()
        super().dispose()


class LentConnection:
    """Django's DBAPI connection as SQLAlchemy sees it: it may use it, not end its
    transaction or close it."""

    def __init__(self, dbapi_connection: Any) -> None:
        self._dbapi_connection = dbapi_connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dbapi_connection, name)

    def commit(self) -> None:
        """Django's atomic() commits; a session's commit only flushes into it."""

    def rollback(self) -> None:
        """Django's atomic() rolls back (DjangoTransaction.rollback marks it so)."""

    def close(self) -> None:
        """Django closes its connections (close_old_connections)."""

    def add_notice_handler(self, handler: Any) -> None:
        """SQLAlchemy adds one per checkout; on a lent connection they would pile up."""


class DjangoTransaction(HandlerTransaction):
    """One run in `transaction.atomic(using=alias, durable=True)` on this thread's Django
    connection, entered when the run starts: the handler's Django ORM writes, `ctx.session`,
    `ctx.execute` and the success mark are all in it. Commit leaves the block (Django then
    runs its `on_commit` callbacks); rollback marks it for rollback and leaves it."""

    def __init__(self, store: DjangoStore, *, lock_early: bool = False) -> None:
        self.store: DjangoStore = store
        self._alias = store.alias
        self._session: Session | None = None
        # Django's rule for a unit of work (a request, here a run): drop connections that
        # broke or outlived CONN_MAX_AGE before, and after.
        close_old_connections()
        self._atomic: Any = transaction.atomic(using=self._alias, durable=True)
        self._atomic.__enter__()
        self._open = True
        self._write_locked = False
        if lock_early:
            self.lock_for_write()

    @property
    def used(self) -> bool:
        # The handler may write through Django's ORM without telling payhook: the mark
        # always goes into this transaction.
        return True

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.store.session_engine, expire_on_commit=False)
        return self._session

    def hold_write_lock(self) -> bool:
        if not self.store.is_sqlite:
            return False
        self.lock_for_write()
        return True

    def lock_for_write(self) -> None:
        """SQLite: take the write lock now (a write that changes nothing takes it)."""
        if self.store.is_sqlite and not self._write_locked:
            with connections[self._alias].cursor() as cursor:
                cursor.execute("DELETE FROM payhook_event WHERE 0")
            self._write_locked = True

    def executor(self) -> Executor:
        return Executor(self.session.connection(), None)

    def cursor_for_write(self) -> Any:
        if self._session is not None:
            self._session.flush()  # the handler's session writes, before its mark
        self.lock_for_write()
        wrapper = connections[self._alias]
        wrapper.ensure_connection()
        return wrapper.connection.cursor()

    def commit(self) -> None:
        if self._session is not None:
            self._session.commit()  # flushes; the lent connection's commit does nothing
        self._leave(rollback=False)

    def rollback(self) -> None:
        if self._session is not None:
            self._session.rollback()
        self._leave(rollback=True)

    def close(self) -> None:
        try:
            if self._open:
                self.rollback()
        finally:
            if self._session is not None:
                self._session.close()
                self._session = None
            close_old_connections()

    def _leave(self, *, rollback: bool) -> None:
        if not self._open:
            return
        self._open = False
        if rollback:
            transaction.set_rollback(True, using=self._alias)
        self._atomic.__exit__(None, None, None)
