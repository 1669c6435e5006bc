"""Throwaway PostgreSQL databases for store tests, and whether PostgreSQL answers at all."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "POOLED_URL_ENV",
    "POSTGRES_URL_ENV",
    "REQUIRE_POSTGRES_ENV",
    "cached_postgres_problem",
    "postgres_admin_url",
    "postgres_database",
    "postgres_pooled_url",
    "postgres_problem",
    "postgres_required",
    "through_pooler",
    "unreachable_postgres",
]

POSTGRES_URL_ENV = "PAYHOOK_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "PAYHOOK_REQUIRE_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# A pooler (PgBouncer in transaction mode, say) in front of the same server: when set, the
# store tests' databases are still made and dropped directly, but payhook reaches them
# through it, as it is run at scale.
POOLED_URL_ENV = "PAYHOOK_TEST_POSTGRES_POOLED_URL"


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


def postgres_pooled_url() -> str | None:
    return os.environ.get(POOLED_URL_ENV) or None


def through_pooler(database_url: str, pooled_url: str) -> str:
    """`database_url`'s database, reached at `pooled_url`'s host, port and user."""
    database = make_url(database_url).database
    return make_url(pooled_url).set(database=database).render_as_string(hide_password=False)


def postgres_required() -> bool:
    return os.environ.get(REQUIRE_POSTGRES_ENV, "") not in ("", "0", "false", "no")


def postgres_problem(admin_url: str) -> str | None:
    """None if PostgreSQL answers at `admin_url`, else why not."""
    try:
        engine = create_engine(admin_url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, and drop it afterwards."""
    name = f"payhook_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# Asked once per URL and session: every store test would otherwise wait for the same timeout.
_problems: dict[str, str | None] = {}


def cached_postgres_problem() -> str | None:
    """`postgres_problem` for the admin URL (and the pooler's, when set), asked once per process."""
    for url in filter(None, (postgres_admin_url(), postgres_pooled_url())):
        if url not in _problems:
            _problems[url] = postgres_problem(url)
        if _problems[url] is not None:
            return f"{_problems[url]} at {url}"
    return None


def unreachable_postgres() -> dict[str, str]:
    """The URLs `cached_postgres_problem` found unreachable, with why."""
    return {url: problem for url, problem in _problems.items() if problem is not None}
