"""Start the test site's payhook processes (manage.py payhook ..., uvicorn) and end them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from payhook.testing import TEST_SECRET, signed_headers

HERE = Path(__file__).parent
MANAGE = HERE / "testsite" / "manage.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, alias: str, *, worker: bool = True, shop: dict[str, Any] | None = None) -> Path:
    """payhook's TOML for the site: the store on Django's `alias`; tenant `conf` queued and
    `live` inline, both enabling the site-local plugin `shop`."""
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in (shop or {}).items())
    path.write_text(
        f'[database]\nurl = "django:{alias}"\n\n'
        f"[processing]\nworker = {json.dumps(worker)}\npoll_interval = 0.05\nlease_seconds = 2\n"
        "max_attempts = 3\nbackoff_base = 0.05\nbackoff_cap = 0.1\n\n"
        f'[tenants.conf]\nwebhook_secrets = ["{TEST_SECRET}"]\nplugins = ["shop"]\n\n'
        f"[tenants.conf.plugin_config.shop]\n{table}\n"
        f'[tenants.live]\nwebhook_secrets = ["{TEST_SECRET}"]\nplugins = ["shop"]\nmode = "inline"\n\n'
        f"[tenants.live.plugin_config.shop]\n{table}"
    )
    return path


class Site:
    """The site's processes; none outlives the test."""

    def __init__(self, env: dict[str, str], config: Path) -> None:
        self.env = {**os.environ, **env, "PAYHOOK_CONFIG": str(config)}
        self.started: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MANAGE), *args], env=self.env, capture_output=True, text=True, timeout=120
        )

    def serve(self) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        process = self._start(
            str(MANAGE),
            "payhook",
            "serve",
            "--port",
            str(port),
            "--log-level",
            os.environ.get("SITE_LOG_LEVEL", "warning"),
        )
        return self._healthy(f"http://127.0.0.1:{port}", "/healthz", process), process

    def uvicorn(self) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        process = self._start(
            "-m", "uvicorn", "testsite.asgi:application", "--port", str(port), "--log-level", "warning"
        )
        return self._healthy(f"http://127.0.0.1:{port}", "/stripe/healthz", process), process

    def worker(self) -> subprocess.Popen[bytes]:
        return self._start(
            str(MANAGE), "payhook", "worker", "--log-level", os.environ.get("SITE_LOG_LEVEL", "warning")
        )

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, *args], env=self.env)
        self.started.append(process)
        return process

    def _healthy(self, url: str, health: str, process: subprocess.Popen[bytes]) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, "the site's process exited early"
            try:
                if httpx.get(url + health, timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the site never became healthy")

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def deliver(url: str, event: dict[str, Any]) -> httpx.Response:
    body = json.dumps(event).encode()
    return httpx.post(url, content=body, headers=signed_headers(body), timeout=30)
