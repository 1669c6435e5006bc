"""examples/django_site/README.md, step by step, in a copy of the example: from nothing to
a paid order, through a real uvicorn, a signed delivery and payhook's worker, on SQLite.
docs/django.md shows the same commands."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from payhook.testing import wait_until
from site_processes import free_port

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "django_site"
# The README's install step: the test runs in an environment that has all of it already.
INSTALL = ["python -m venv .venv && . .venv/bin/activate", "pip install -e . -e integrations/django django"]


def readme_steps() -> list[list[str]]:
    """The commands of each `sh` block of the example's README, in order."""
    text = (EXAMPLE / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]


def clean_env() -> dict[str, str]:
    """This environment without the test site's settings, its own interpreter's bin first:
    `python` and `uvicorn` in the steps are the ones payhook is installed with."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TESTSITE_", "DJANGO_", "PAYHOOK_")) and key != "PYTHONPATH"
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run(script: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    return done


def order_paid(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT paid FROM shop_order WHERE ref = 'A-1'").fetchone()
    return bool(row and row[0])


def test_the_readme_takes_an_order_from_nothing_to_paid(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(
        EXAMPLE,
        root / "examples" / "django_site",
        ignore=shutil.ignore_patterns("db.sqlite3*", "paid.json", "__pycache__"),
    )
    port = str(free_port())
    install, setup, serve, send, check = [
        [line.replace("8000", port) for line in step] for step in readme_steps()
    ]
    assert install == INSTALL
    exports = [line for line in setup if line.startswith("export ")]
    env = clean_env()

    run(setup, root, env)
    [uvicorn] = serve
    assert uvicorn.startswith("uvicorn ")
    server = subprocess.Popen(["bash", "-c", "\n".join([*exports, "exec " + uvicorn])], cwd=root, env=env)
    try:
        wait_until(lambda: server.poll() is not None or _healthy(f"http://127.0.0.1:{port}/stripe/healthz"))
        assert server.poll() is None, "uvicorn exited"
        sent = run([*exports, *send], root, env)
        assert sent.stdout.startswith('200 {"status":"accepted"'), sent.stdout

        wait_until(lambda: order_paid(root / "examples" / "django_site" / "db.sqlite3"))
        checked = run([*exports, *check], root, env)
        assert "paid: True" in checked.stdout
    finally:
        server.terminate()
        server.wait(30)


def test_docs_django_shows_the_readme_steps() -> None:
    page = (REPO / "docs" / "django.md").read_text()
    for step in readme_steps():
        for line in step:
            assert line in page, line


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False
