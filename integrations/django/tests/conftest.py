"""One Django test site for the session: SQLite as `default`, a fresh PostgreSQL database as
`pg`; payhook's store is on one of them per test (`backend`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from payhook.testing import postgres_admin_url, postgres_database, postgres_problem, postgres_required
from sqlalchemy import make_url

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

ALIASES = {"sqlite": "default", "postgres": "pg"}


@pytest.fixture(scope="session")
def site_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment the test site runs in (this process, and the ones tests start)."""
    env = {
        "DJANGO_SETTINGS_MODULE": "testsite.settings",
        "TESTSITE_SQLITE": str(tmp_path_factory.mktemp("site") / "site.db"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    admin = postgres_admin_url()
    problem = postgres_problem(admin)
    if problem is not None:
        if postgres_required():
            pytest.fail(f"PostgreSQL: {problem}", pytrace=False)
        os.environ.update(env)
        yield env
        return
    with postgres_database(admin) as url:
        parsed = make_url(url)
        env |= {
            "TESTSITE_PG_NAME": str(parsed.database),
            "TESTSITE_PG_USER": parsed.username or "postgres",
            "TESTSITE_PG_HOST": parsed.host or "127.0.0.1",
            "TESTSITE_PG_PORT": str(parsed.port or 5432),
        }
        os.environ.update(env)
        try:
            yield env
        finally:
            from django.db import connections

            connections.close_all()


@pytest.fixture(scope="session")
def site(site_env: dict[str, str]) -> dict[str, str]:
    """Django set up in this process, with the site's and payhook's tables on both databases."""
    import django
    from django.core.management import call_command

    django.setup()
    from payhook.config import DatabaseConfig
    from payhook.store import migrations
    from payhook.store.engine import Store

    for alias in ("default", "pg") if "TESTSITE_PG_NAME" in site_env else ("default",):
        call_command("migrate", run_syncdb=True, database=alias, verbosity=0)
        store = Store(DatabaseConfig(url=f"django:{alias}"), timeout=None)
        try:
            migrations.upgrade(store.engine)
        finally:
            store.dispose()
    return site_env


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, site: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The Django database payhook's store and the shop's tables are on, for this test."""
    if request.param == "postgres" and "TESTSITE_PG_NAME" not in site:
        pytest.skip("PostgreSQL is not reachable")
    alias = ALIASES[request.param]
    monkeypatch.setenv("TESTSITE_SHOP_DB", alias)
    return alias
