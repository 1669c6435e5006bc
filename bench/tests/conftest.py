"""Smoke tests of the benchmark scripts: each runs once, tiny, as a subprocess.

They prove a script still works end to end and prints what it should; the numbers are
only checked to be plausible (present, positive), never against a timing target.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))  # the scripts' own modules (servers, vs_original...), as they import them

import servers  # noqa: E402

# What a smoke may take on two busy shared cores; the script is stopped a little before
# pytest-timeout would fire, so its servers are stopped too and its output is shown.
SCRIPT_GRACE = 15


def run_script(script: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run bench/`script` with this Python; fail the test, with its output, unless it exits 0.

    It runs in its own process group: on a timeout the whole group (the script and the payhook
    processes it started) is killed, so nothing is left listening.
    """
    command = [sys.executable, str(BENCH / script), *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=BENCH.parent,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout - SCRIPT_GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"{script} ran past {timeout - SCRIPT_GRACE:.0f}s\n{_tails(stdout, stderr)}", pytrace=False
        )
    if process.returncode != 0:
        pytest.fail(f"{script} exited {process.returncode}\n{_tails(stdout, stderr)}", pytrace=False)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _tails(stdout: str, stderr: str) -> str:
    return f"--- stdout (tail)\n{stdout[-4000:]}\n--- stderr (tail)\n{stderr[-4000:]}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend a script supports; PostgreSQL as the core's suite treats it."""
    if request.param == "postgres":
        require_postgres()
    return str(request.param)


def require_postgres() -> None:
    """Skip when PostgreSQL does not answer, or fail when PAYHOOK_REQUIRE_POSTGRES is set.

    The server is the one the core's suite uses (PAYHOOK_TEST_POSTGRES_URL); the scripts
    create their databases on `servers.POSTGRES_ADMIN`, so it must be that server.
    """
    from payhook.testing import REQUIRE_POSTGRES_ENV, postgres_admin_url, postgres_problem, postgres_required

    admin = postgres_admin_url()
    problem = postgres_problem(admin)
    tested, bench = make_url(admin), make_url(servers.POSTGRES_ADMIN)
    if problem is None and (tested.host, tested.port or 5432) != (bench.host, bench.port or 5432):
        problem = f"the bench scripts create their databases on {servers.POSTGRES_ADMIN}, another server"
    if problem is None:
        return
    message = f"PostgreSQL unusable at {admin} ({problem})"
    if postgres_required():
        pytest.fail(f"{message}; {REQUIRE_POSTGRES_ENV} is set", pytrace=False)
    pytest.skip(message)
