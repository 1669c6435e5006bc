"""Fixtures shared by the core's test modules (payhook.testing's come with its plugin)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from payhook.testing import wait_until

from .processes import free_port

pytest_plugins = ["payhook.testing"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real Chromium (left out by make test-fast)")


@pytest.fixture(scope="session")
def mypy_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the session's type checks, on every xdist worker.

    mypy spends most of a cold run on the standard library and the dependencies; with a shared
    cache only the first checks pay for them (each still reads its own sources afresh). Workers
    may write it at once: mypy writes each cache file to a temporary name and renames it.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    path = root / "mypy-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def serve_in_thread() -> Iterator[Any]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a thread; returns its base URL.

    A real server, so that a link's path is decoded exactly once, as in production.
    """
    import uvicorn

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> str:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="operator-app", daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_until(lambda: server.started or not thread.is_alive(), what="the operator app to listen")
        assert server.started
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)
