"""Test helpers for payhook and its plugins; an opt-in pytest plugin.

Enable it in a `conftest.py` with ``pytest_plugins = ["payhook.testing"]``. It gives:

* ``make_payhook`` (a `MakePayhook`): an app with a real store, chosen plugins and tenants,
  returned as a `PayhookHarness` whose client signs deliveries the way Stripe does;
* ``stripe_event`` (a `StripeEventFactory`): real Stripe payloads (shipped with payhook),
  each with a fresh id;
* ``payhook_database_url``: a fresh SQLite file, or a fresh PostgreSQL database when the
  test is parametrised with ``"postgresql"`` (see ``store_backends``);
* ``stripe_api`` (a `StripeAPIRouter`): a respx router for ``https://api.stripe.com``;

and, to call from tests, ``assert_migrations_match(plugin)``, ``wait_until(condition)``,
``fresh_event_id()`` and ``load_thin_event()``. What the harness reads back from the store
comes as frozen dataclasses (`Run`, `FailedAttempt`), never as the store's own rows.

Each job has its module: `samples` (the payloads), `harness`, `signing`, `waiting`,
`postgres` (throwaway databases), `migration_checks`, `fixture_types`, and `pytest_plugin`
(the fixtures). Only `pytest_plugin` and `store_backends` need pytest: scripts import the
rest (``from payhook.testing import load_event``) without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from payhook.execute.outcome import RunOutcome
from payhook.store.runs import ClaimedRun
from payhook.testing.fixture_types import StripeAPIRouter, StripeEventFactory
from payhook.testing.harness import (
    FailedAttempt,
    HarnessFactory,
    MakePayhook,
    PayhookHarness,
    Run,
    build_config,
)
from payhook.testing.migration_checks import assert_migrations_match
from payhook.testing.postgres import (
    POSTGRES_URL_ENV,
    REQUIRE_POSTGRES_ENV,
    postgres_admin_url,
    postgres_database,
    postgres_problem,
    postgres_required,
)
from payhook.testing.samples import FIXTURES, fresh_event_id, load_event, load_thin_event
from payhook.testing.signing import TEST_SECRET, signed_headers
from payhook.testing.waiting import wait_until

if TYPE_CHECKING:
    from payhook.testing.pytest_plugin import store_backends

__all__ = [
    "FIXTURES",
    "POSTGRES_URL_ENV",
    "REQUIRE_POSTGRES_ENV",
    "TEST_SECRET",
    "ClaimedRun",
    "FailedAttempt",
    "HarnessFactory",
    "MakePayhook",
    "PayhookHarness",
    "Run",
    "RunOutcome",
    "StripeAPIRouter",
    "StripeEventFactory",
    "assert_migrations_match",
    "build_config",
    "fresh_event_id",
    "load_event",
    "load_thin_event",
    "postgres_admin_url",
    "postgres_database",
    "postgres_problem",
    "postgres_required",
    "signed_headers",
    "store_backends",
    "wait_until",
]

# pytest, registering this package as a plugin, registers the modules named here too: the
# fixtures and hooks live in one module that only pytest loads.
pytest_plugins = ["payhook.testing.pytest_plugin"]


def __getattr__(name: str) -> Any:
    # The one pytest object a test imports from here, made when first asked for, so that
    # importing payhook.testing does not import pytest.
    if name == "store_backends":
        try:
            from payhook.testing.pytest_plugin import store_backends
        except ImportError as exc:
            message = f"payhook.testing.store_backends is a pytest mark: it needs pytest ({exc})"
            raise ImportError(message) from exc
        return store_backends
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
