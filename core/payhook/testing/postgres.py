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
    "POSTGRES_URL_ENV",
    "REQUIRE_POSTGRES_ENV",
    "cached_postgres_problem",
    "postgres_admin_url",
    "postgres_database",
    "postgres_problem",
    "postgres_required",
    "unreachable_postgres",
]

POSTGRES_URL_ENV = "PAYHOOK_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "PAYHOOK_REQUIRE_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


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
    """`postgres_problem` for the admin URL, asked once per process."""
    url = postgres_admin_url()
    if url not in _problems:
        _problems[url] = postgres_problem(url)
    return _problems[url]


def unreachable_postgres() -> dict[str, str]:
    """The URLs `cached_postgres_problem` found unreachable, with why."""
    return {url: problem for url, problem in _problems.items() if problem is not None}
