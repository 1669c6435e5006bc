"""Hostile connections against a real `payhook serve`: each costs bounded time and memory.

Raw sockets, because HTTP clients will not send what these tests send. Every wait is a
socket read with a timeout (or a poll with a deadline), never a bare sleep.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from payhook.testing import TEST_SECRET, signed_headers
from payhook.testing.samples import load_event

from .processes import free_port

BODY_TIMEOUT = 1.0  # [ingest] body_timeout in these tests; the default is 10
HEAD_TIMEOUT = 2.0  # payhook serve --head-timeout in these tests; the default is 10
ANSWER_WITHIN = 8.0  # socket timeout for an answer: less than the defaults, so they cannot pass
MiB = 1024 * 1024


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def connect(self, timeout: float = ANSWER_WITHIN) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def exchange(self, raw: bytes) -> Answer:
        with self.connect() as sock:
            sock.sendall(raw)
            answer = read_answer(sock)
        assert answer is not None, "the server closed the connection without answering"
        return answer


def write_config(directory: Path, url: str, ingest: str = "") -> Path:
    path = directory / "payhook.toml"
    path.write_text(
        f'[database]\nurl = "{url}"\n\n[processing]\nworker = false\n\n'
        f"[ingest]\nbody_timeout = {BODY_TIMEOUT}\n{ingest}\n"
        f'[tenants.conf]\nwebhook_secrets = ["{TEST_SECRET}"]\n'
    )
    return path


@contextmanager
def serving(directory: Path, url: str, *options: str, ingest: str = "") -> Iterator[Server]:
    """`payhook serve` on `url` with `options` (and `ingest` settings), healthy, and stopped afterwards."""
    config = write_config(directory, url, ingest)
    payhook = [sys.executable, "-m", "payhook"]
    if url.startswith("postgresql"):  # serve migrates SQLite itself, PostgreSQL on purpose
        subprocess.run([*payhook, "db", "upgrade", "--config", str(config)], check=True, timeout=60)
    port = free_port()
    log = directory / f"serve-{port}.log"
    argv = [*payhook, "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen([*argv, "--head-timeout", str(HEAD_TIMEOUT), *options], stderr=out)
    server = Server(port, process, log)
    try:
        wait_healthy(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)  # a poll with a deadline: the port is not open yet
    raise AssertionError(f"payhook serve never became healthy:\n{server.log.read_text()}")


def read_answer(sock: socket.socket) -> Answer | None:
    """One HTTP answer from `sock`, or None when it was closed first; raises on timeout."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the peer closes `sock` within `seconds` (whatever it says first)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def request(method: str, path: str, body: bytes = b"", host: str = "127.0.0.1", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def signed_delivery(path: str = "/conf") -> bytes:
    body = json.dumps(load_event("payment_intent.succeeded")).encode()
    return request("POST", path, body, Stripe_Signature=signed_headers(body)["Stripe-Signature"])


def assert_json_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    assert body["error"] == code and body["detail"]
    return body


# Both parsers `payhook serve --http` offers must hold every bound below.
PARSERS = ["h11", "httptools"]


@pytest.fixture(scope="module", params=PARSERS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One SQLite-backed server per parser for the tests that do not depend on the store."""
    directory = tmp_path_factory.mktemp("hostile")
    with serving(directory, f"sqlite:///{directory / 'payhook.db'}", "--http", request.param) as running:
        yield running


def test_a_stalled_body_gets_408_within_body_timeout_and_the_connection_closes(server: Server) -> None:
    with server.connect() as sock:
        head = request("POST", "/conf", Stripe_Signature="t=1,v1=00").replace(
            b"Content-Length: 0", b"Content-Length: 1000"
        )
        sock.sendall(head + b"{" * 100)  # then nothing: 900 bytes never come
        answer = read_answer(sock)
        assert answer is not None
        assert_json_error(answer, 408, "body_timeout")
        assert answer.headers["connection"] == "close"
        assert closed_within(sock, ANSWER_WITHIN)


def test_silent_and_trickling_connections_are_closed_at_the_head_deadline(server: Server) -> None:
    with server.connect() as silent, server.connect() as trickling:
        trickling.sendall(b"POST /conf HTTP/1.1\r\nHost: x\r\n")
        trickling.settimeout(0.25)
        closed = False
        for _ in range(int(ANSWER_WITHIN / 0.25)):  # a header byte every quarter second
            try:
                trickling.sendall(b"X")
                closed = trickling.recv(1024) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            break
        assert closed, "a trickled request head kept its connection past the head deadline"
        assert closed_within(silent, ANSWER_WITHIN)


def test_a_10_kb_tenant_name_gets_404_with_the_name_cut(server: Server) -> None:
    name = "x" * 10_000
    answer = server.exchange(signed_delivery(f"/{name}"))
    detail = assert_json_error(answer, 404, "unknown_tenant")["detail"]
    assert "x" * 64 + "\u2026" in detail and "x" * 65 not in detail
    assert len(answer.body) < 300


def test_a_trailing_slash_with_a_foreign_host_is_no_redirect(server: Server) -> None:
    answer = server.exchange(request("POST", "/conf/", b"{}", host="evil.example"))
    assert_json_error(answer, 404, "not_found")
    assert "location" not in answer.headers
    assert b"evil.example" not in answer.body


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/conf", {"POST"}), ("PUT", "/conf", {"POST"}), ("POST", "/healthz", {"GET", "HEAD"})],
)
def test_wrong_methods_get_json_405_with_allow(
    server: Server, method: str, path: str, allowed: set[str]
) -> None:
    answer = server.exchange(request(method, path))
    assert_json_error(answer, 405, "method_not_allowed")
    assert {item.strip() for item in answer.headers["allow"].split(",")} == allowed


def test_an_unknown_path_gets_json_404(server: Server) -> None:
    assert_json_error(server.exchange(request("GET", "/no/such/place")), 404, "not_found")


class EndlessHeaders(threading.Thread):
    """Opens connection after connection, each sending one header line that never ends."""

    LINE_LIMIT = 96 * MiB  # per connection: beyond this the server is not bounding anything

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.started_sending = threading.Event()
        self.stop = threading.Event()
        self.sent: list[int] = []  # bytes the server took on each connection before cutting it
        self.answers: list[int] = []  # statuses received, if any, before the close

    def run(self) -> None:
        chunk = b"a" * (256 * 1024)
        deadline = time.monotonic() + 45
        while not self.stop.is_set() and time.monotonic() < deadline:
            sent = 0
            with self.server.connect(timeout=10) as sock:
                try:
                    sock.sendall(b"POST /conf HTTP/1.1\r\nHost: x\r\nX-Endless: ")
                    while sent < self.LINE_LIMIT and not self.stop.is_set():
                        sock.sendall(chunk)
                        sent += len(chunk)
                        self.started_sending.set()
                except OSError:
                    pass  # cut off: what we want
                try:
                    answer = read_answer(sock)
                    if answer is not None:
                        self.answers.append(answer.status)
                except OSError:
                    pass
            self.sent.append(sent)


@pytest.mark.parametrize("http", PARSERS)
@pytest.mark.parametrize("payhook_backend", ["sqlite", "postgresql"], indirect=True)
def test_an_endless_header_is_cut_off_memory_stays_flat_and_deliveries_go_on(
    tmp_path: Path, payhook_database_url: str, http: str
) -> None:
    with serving(tmp_path, payhook_database_url, "--http", http) as server:
        assert server.exchange(signed_delivery()).status == 200  # pools and caches warm
        rss_before = server.rss_bytes()
        attack = EndlessHeaders(server)
        attack.start()
        try:
            assert attack.started_sending.wait(ANSWER_WITHIN)
            answer = server.exchange(signed_delivery())  # on another connection, meanwhile
            assert attack.is_alive(), "the attack ended before the delivery was answered"
        finally:
            attack.stop.set()
            attack.join(60)
        # Stored, and "ignored" because the tenant enables no plugin.
        assert answer.status == 200 and answer.json()["status"] == "ignored", answer
        assert not attack.is_alive()
        assert attack.sent and max(attack.sent) < 16 * MiB, attack.sent
        assert set(attack.answers) <= {400, 431}, attack.answers
        assert server.rss_bytes() - rss_before < 64 * MiB
