"""Run `payhook serve` and `payhook worker` as real processes, and load them over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from payhook.testing import TEST_SECRET, signed_headers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, url: str, processing: dict[str, Any] | None = None) -> Path:
    lines = [f'[database]\nurl = "{url}"\n', "[processing]\nworker = false\npoll_interval = 0.1\n"]
    for key, value in (processing or {}).items():
        lines.append(f"{key} = {json.dumps(value)}\n")
    lines.append(f'[tenants.conf]\nwebhook_secrets = ["{TEST_SECRET}"]\nplugins = ["testplugin"]\n')
    path = directory / "payhook.toml"
    path.write_text("".join(lines))
    return path


class Processes:
    """Starts payhook processes and makes sure none outlives the test."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.started: list[subprocess.Popen[bytes]] = []

    def serve(self) -> str:
        port = free_port()
        process = self._start("serve", "--port", str(port), "--log-level", "warning")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, "payhook serve exited early"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("payhook serve never became healthy")

    def worker(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self._start("worker", "--log-level", "warning", *args, env=env)

    def _start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "payhook", args[0], "--config", str(self.config), *args[1:]]
        process = subprocess.Popen(command, env={**self.env, **(env or {})})
        self.started.append(process)
        return process

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


@contextmanager
def payhook_processes(config: Path, env: dict[str, str] | None = None) -> Iterator[Processes]:
    processes = Processes(config, env)
    try:
        yield processes
    finally:
        processes.close()


async def _post_all(deliveries: Iterable[tuple[str, bytes]], concurrency: int) -> list[tuple[str, int]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def post(url: str, body: bytes) -> tuple[str, int]:
            async with semaphore:
                try:
                    response = await client.post(url, content=body, headers=signed_headers(body))
                    return url, response.status_code
                except httpx.TransportError:
                    return url, -1

        return await asyncio.gather(*(post(url, body) for url, body in deliveries))


def post_all(deliveries: Iterable[tuple[str, bytes]], concurrency: int = 16) -> list[tuple[str, int]]:
    """POST each (url, body), signed, `concurrency` at a time; returns (url, status) in order."""
    return asyncio.run(_post_all(list(deliveries), concurrency))
