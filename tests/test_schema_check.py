"""A runtime on a database its migrations have not reached refuses to start, and says what to run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from payhook import create_app
from payhook.cli import main
from payhook.store.migrations import NOT_MIGRATED, SchemaNotMigrated, alembic_config, upgrade
from payhook.testing import build_config, load_event, store_backends
from payhook.testing.signing import encode, signed_headers
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from .helpers import RecordingPlugin

SENTENCE = "run `payhook db upgrade` or pass `migrate=True`"


@store_backends
def test_a_new_database_is_refused_with_what_to_run(payhook_database_url: str, caplog: Any) -> None:
    app = create_app(
        build_config(payhook_database_url, plugins={"rec": None}), {"rec": RecordingPlugin("rec")}
    )
    with pytest.raises(SchemaNotMigrated) as refused:
        asyncio.run(app.payhook.start())
    assert NOT_MIGRATED == SENTENCE and SENTENCE in str(refused.value)
    assert SENTENCE in caplog.text  # and the log says it too
    assert not app.payhook._started
    upgrade(app.payhook.store.engine)
    asyncio.run(app.payhook.start())
    asyncio.run(app.payhook.stop())


def test_mounted_without_lifespan_healthz_says_schema_not_migrated_until_upgraded(tmp_path: Path) -> None:
    config = build_config(f"sqlite:///{tmp_path / 'host.db'}", plugins={"rec": None})
    webhooks = create_app(config, {"rec": RecordingPlugin("rec")})
    host = Starlette(routes=[Mount("/stripe", app=webhooks)])  # Starlette skips mounted lifespans
    with TestClient(host) as client:
        answer = client.get("/stripe/healthz")
        assert answer.status_code == 503
        assert answer.json()["error"] == "schema_not_migrated" and SENTENCE in answer.json()["detail"]
        # A delivery is a 503 Stripe retries, not a 500, and then it is stored.
        body = encode(load_event("payment_intent.succeeded"))
        refused = client.post("/stripe/test", content=body, headers=signed_headers(body))
        assert refused.status_code == 503 and refused.json()["error"] == "schema_not_migrated"
        upgrade(webhooks.payhook.store.engine)
        assert client.get("/stripe/healthz").json() == {"status": "ok"}
        retried = client.post("/stripe/test", content=body, headers=signed_headers(body))
        assert retried.status_code == 200 and retried.json()["status"] == "accepted"


def test_an_outdated_schema_is_refused_naming_the_missing_revision(tmp_path: Path) -> None:
    app = create_app(
        build_config(f"sqlite:///{tmp_path / 'old.db'}", plugins={"rec": None}),
        {"rec": RecordingPlugin("rec")},
    )
    command.upgrade(alembic_config(app.payhook.store.engine), "0005_operator_sessions")
    with pytest.raises(SchemaNotMigrated, match="0006_stable_error_types"):
        asyncio.run(app.payhook.start())


# On SQLite `payhook worker` migrates the file itself; PostgreSQL is upgraded on purpose.
@pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)
def test_payhook_worker_refuses_an_unmigrated_database(payhook_database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "payhook.toml"
    path.write_text(
        f'[database]\nurl = "{payhook_database_url}"\n[tenants.a]\nwebhook_secrets = ["whsec_a"]\n'
    )
    result = CliRunner().invoke(main, ["worker", "--config", str(path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert SENTENCE in result.stderr
