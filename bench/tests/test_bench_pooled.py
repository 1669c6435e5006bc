"""bench/prepared.py and bench/pooled_burst.py: prepared statements on and off; a burst
through a pooler with a worker killed (through PgBouncer when $PAYHOOK_TEST_POSTGRES_POOLED_URL
is set, else straight to PostgreSQL: the script's checks are the same)."""

from __future__ import annotations

import os

import pytest
import servers
from conftest import require_postgres, run_script


@pytest.mark.timeout(90)
def test_prepared_statements_on_and_off() -> None:
    require_postgres()
    completed = run_script("prepared.py", ["--rounds=1", "--iterations=5"], timeout=75)
    lines = completed.stdout.splitlines()
    assert any(line.startswith("prepared (threshold 5)") for line in lines), completed.stdout
    assert any(line.startswith("never prepared (None)") for line in lines), completed.stdout


@pytest.mark.timeout(150)
def test_a_burst_with_a_killed_worker_is_answered_stored_and_run_once() -> None:
    require_postgres()
    pooled = os.environ.get("PAYHOOK_TEST_POSTGRES_POOLED_URL") or servers.POSTGRES_ADMIN.replace(
        "postgresql://", "postgresql+psycopg://"
    )
    args = [f"--pooled-url={pooled}", "--events=60", "--rate=60", "--lease=2"]
    completed = run_script("pooled_burst.py", args, timeout=135)
    assert completed.stdout.splitlines()[-1] == "OK", completed.stdout
    assert "worker-1 killed (SIGKILL)" in completed.stdout
