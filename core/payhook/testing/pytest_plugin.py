"""The pytest side of the test kit: its fixtures, the `store_backends` mark, and the summary
line about skipped PostgreSQL tests.

Registered by ``pytest_plugins = ["payhook.testing"]`` (the package names this module in
its own `pytest_plugins`); everything else in payhook.testing works without pytest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payhook.testing.fixture_types import StripeAPIRouter, StripeEventFactory
from payhook.testing.harness import HarnessFactory, MakePayhook
from payhook.testing.postgres import (
    POSTGRES_URL_ENV,
    REQUIRE_POSTGRES_ENV,
    cached_postgres_problem,
    postgres_admin_url,
    postgres_database,
    postgres_pooled_url,
    postgres_required,
    through_pooler,
    unreachable_postgres,
)
from payhook.testing.samples import load_event

__all__ = [
    "make_payhook",
    "payhook_backend",
    "payhook_database_url",
    "pytest_terminal_summary",
    "store_backends",
    "stripe_api",
    "stripe_event",
]

store_backends = pytest.mark.parametrize("payhook_backend", ["sqlite", "postgresql"], indirect=True)
"""Decorate a test with this to run it on SQLite and on PostgreSQL."""


@pytest.fixture
def payhook_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def payhook_database_url(payhook_backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the backend the test asked for.

    PostgreSQL's is reached through the pooler at $PAYHOOK_TEST_POSTGRES_POOLED_URL when
    that is set (made and dropped directly all the same)."""
    if payhook_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'payhook.db'}"
        return
    problem = cached_postgres_problem()
    if problem is not None:
        message = f"PostgreSQL unreachable ({problem})"
        if postgres_required():
            pytest.fail(f"{message}; {REQUIRE_POSTGRES_ENV} is set", pytrace=False)
        pytest.skip(message)
    pooled = postgres_pooled_url()
    with postgres_database(postgres_admin_url()) as url:
        yield url if pooled is None else through_pooler(url, pooled)


@pytest.fixture
def stripe_event() -> StripeEventFactory:
    """`stripe_event("charge.refunded.full", data__object__metadata={...})`"""
    return load_event


@pytest.fixture
def make_payhook(payhook_database_url: str) -> Iterator[MakePayhook]:
    """Factory of apps over a fresh, migrated store: see `MakePayhook` for its arguments."""
    factory = HarnessFactory(payhook_database_url)
    yield factory
    factory.close()


@pytest.fixture
def stripe_api() -> Iterator[StripeAPIRouter]:
    """A respx router that answers for ``https://api.stripe.com``; unmatched calls fail."""
    import respx

    with respx.mock(base_url="https://api.stripe.com", assert_all_called=False) as router:
        yield router


# The skip reason of `payhook_database_url`, as `cached_postgres_problem` words the problem.
UNREACHABLE_SKIP = re.compile(r"PostgreSQL unreachable \((?P<problem>.*) at (?P<url>\S+)\)")


def unreachable_in_skips(reports: list[Any]) -> dict[str, str]:
    """The URLs that skipped tests found unreachable, from their reports' skip reasons.

    Under pytest-xdist the workers ask PostgreSQL, not the process that writes the summary."""
    found: dict[str, str] = {}
    for report in reports:
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        if (match := UNREACHABLE_SKIP.search(str(reason))) is not None:
            found.setdefault(match["url"], match["problem"])
    return found


def pytest_terminal_summary(terminalreporter: Any) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    unreachable = {**unreachable_in_skips(skipped), **unreachable_postgres()}
    for url, problem in unreachable.items():
        terminalreporter.write_line(
            f"payhook: PostgreSQL store tests were SKIPPED: unreachable at {url} ({problem}). "
            f"Set {POSTGRES_URL_ENV} to test against PostgreSQL.",
            yellow=True,
            bold=True,
        )
