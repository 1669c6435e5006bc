"""The store's health under a running receiver: files deleted, replaced, immutable, a full disk.

A delivery is never answered 200 unless its event can be found again, and `/healthz` says
whether the store takes writes now, so that a load balancer stops sending when it does not.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from payhook.testing import PayhookHarness, signed_headers
from payhook.testing.samples import load_event
from sqlalchemy import event, make_url

from .test_hostile_connections import Server, serving

EVENT_TYPE = "payment_intent.succeeded"


def post_event(server: Server, event_id: str | None = None) -> httpx.Response:
    event = load_event(EVENT_TYPE)
    if event_id is not None:
        event["id"] = event_id
    body = json.dumps(event).encode()
    return httpx.post(
        f"http://127.0.0.1:{server.port}/conf", content=body, headers=signed_headers(body), timeout=10
    )


def healthz(server: Server) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)


def assert_unavailable(response: httpx.Response, detail: str | None = None) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "store_unavailable", body
    if detail is not None:
        assert body["detail"] == detail, body


def stored_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT stripe_event_id FROM payhook_event")}


def test_deleting_the_database_under_serve_answers_503_and_loses_no_acknowledged_event(
    tmp_path: Path,
) -> None:
    database = tmp_path / "payhook.db"
    url = f"sqlite:///{database}"
    acknowledged_after_deletion: list[str] = []
    with serving(tmp_path, url) as server:
        assert post_event(server).status_code == 200
        for path in tmp_path.glob("payhook.db*"):
            path.unlink()  # rm payhook.db*
        retried = load_event(EVENT_TYPE)["id"]
        answer = post_event(server, retried)
        if answer.status_code == 200:
            acknowledged_after_deletion.append(retried)
        assert_unavailable(answer)
        assert_unavailable(healthz(server), "file_replaced")
        assert server.process.poll() is None
        # No new connection recreates an empty database at the path either.
        assert_unavailable(post_event(server))
        assert not database.exists()
        assert "was deleted or replaced while open; restart payhook" in server.log.read_text()
    with serving(tmp_path, url) as server:  # the restart migrates a new database
        assert stored_ids(database) >= set(acknowledged_after_deletion)
        assert post_event(server, retried).json()["status"] == "ignored"  # Stripe's retry: stored now
        assert retried in stored_ids(database)


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`chattr +i path` for the block; skips the test where the filesystem cannot."""
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr (e2fsprogs)")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot make {path} immutable here (needs root and ext4/xfs): {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_immutable_shm_file_is_a_logged_503_and_the_server_stays_up(tmp_path: Path) -> None:
    # SQLite writes -shm through a memory mapping: writing to an immutable file's mapping is
    # a SIGBUS, which ended the process without a log line.
    with serving(tmp_path, f"sqlite:///{tmp_path / 'payhook.db'}") as server:
        assert post_event(server).status_code == 200
        with immutable(tmp_path / "payhook.db-shm"):
            assert_unavailable(post_event(server))
            assert_unavailable(healthz(server), "read_only")
            assert server.process.poll() is None, server.log.read_text()
        assert "payhook.db-shm cannot be written" in server.log.read_text()
        # Writable again: so is the store, at once.
        assert healthz(server).status_code == 200
        stored = load_event(EVENT_TYPE)["id"]
        assert post_event(server, stored).status_code == 200
    assert stored in stored_ids(tmp_path / "payhook.db")


def test_an_immutable_database_file_turns_healthz_503(tmp_path: Path) -> None:
    with serving(tmp_path, f"sqlite:///{tmp_path / 'payhook.db'}") as server:
        assert post_event(server).status_code == 200
        with immutable(tmp_path / "payhook.db"):
            assert_unavailable(healthz(server), "read_only")
        assert healthz(server).status_code == 200


@contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_turns_healthz_503_until_there_is_room(tmp_path: Path) -> None:
    with (
        small_tmpfs(tmp_path / "disk") as disk,
        serving(tmp_path, f"sqlite:///{disk / 'payhook.db'}") as server,
    ):
        assert post_event(server).status_code == 200
        filler = disk / "filler"
        with filler.open("wb") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass  # ENOSPC: the disk is full
        assert_unavailable(healthz(server), "disk_full")
        filler.unlink()
        assert healthz(server).status_code == 200


# -- in process, on the real app and its lifespan ------------------------------------------


def sqlite_path(harness: PayhookHarness) -> Path:
    return Path(str(harness.store.engine.url.database))


def test_a_database_file_replaced_under_the_app_is_refused(make_payhook: Any, stripe_event: Any) -> None:
    harness = make_payhook()
    path = sqlite_path(harness)
    assert harness.deliver(stripe_event(EVENT_TYPE)).status_code == 200
    other = path.with_name("other.db")
    sqlite3.connect(other).close()
    os.replace(other, path)
    response = harness.deliver(stripe_event(EVENT_TYPE))
    assert response.status_code == 503 and response.json()["error"] == "store_unavailable"
    health = harness.client.get("/healthz")
    assert health.status_code == 503 and health.json()["detail"] == "file_replaced"


def test_a_write_that_failed_as_disk_full_keeps_healthz_503_until_one_succeeds(
    make_payhook: Any, stripe_event: Any
) -> None:
    # PRAGMA max_page_count makes the database "full" (SQLITE_FULL) without a full disk.
    harness = make_payhook()
    path = sqlite_path(harness)
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    limit = {"pages": pages}

    @event.listens_for(harness.store.engine, "connect")
    def _limit(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={limit['pages']}")

    harness.store.engine.dispose()  # the pool's connections open again, limited
    big = "x" * 200_000
    response = harness.deliver(stripe_event(EVENT_TYPE, data__object__metadata={"note": big}))
    assert response.status_code == 503 and response.json()["error"] == "store_unavailable"
    health = harness.client.get("/healthz")
    assert health.status_code == 503 and health.json()["detail"] == "disk_full"
    assert harness.client.get("/healthz").status_code == 503  # a read succeeding changes nothing

    limit["pages"] = 1_000_000
    harness.store.engine.dispose()
    assert harness.deliver(stripe_event(EVENT_TYPE, data__object__metadata={"note": big})).status_code == 200
    assert harness.client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)
def test_a_read_only_postgresql_is_a_503_and_healthz_says_so(make_payhook: Any, stripe_event: Any) -> None:
    harness = make_payhook()
    url = make_url(str(harness.store.engine.url))
    # From another database: a session of this one would be read-only too.
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{url.database}" SET default_transaction_read_only = on')
    try:
        harness.store.engine.dispose()  # new sessions start read-only, as on a standby
        response = harness.deliver(stripe_event(EVENT_TYPE))
        assert response.status_code == 503 and response.json()["error"] == "store_unavailable"
        health = harness.client.get("/healthz")
        assert health.status_code == 503 and health.json()["detail"] == "read_only"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{url.database}" RESET default_transaction_read_only')
    harness.store.engine.dispose()
    assert harness.deliver(stripe_event(EVENT_TYPE)).status_code == 200
    assert harness.client.get("/healthz").json() == {"status": "ok"}
