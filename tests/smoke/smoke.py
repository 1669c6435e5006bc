"""Smoke test of installed payhook wheels: serve, a signed delivery, a handler run, the status page.

Run by the tox env `packages` with the python of a clean virtualenv holding only the built
wheels, from a scratch directory (never the checkout), in isolated mode (`python -I`), so that
nothing comes from the source tree:

    <venv>/bin/python -I tests/smoke/smoke.py --dist DIR

It writes a payhook.toml on a fresh SQLite file with one tenant enabling payhook-registration,
runs `payhook db upgrade` (the core's and the plugin's migrations must be in the wheels),
starts `payhook serve` with the operator app, creates an order, pays it with a signed
`payment_intent.succeeded` sent by `payhook events trigger`, waits until the order is paid,
fetches the operator status page (its templates must be in the wheel) and stops the server
with SIGTERM. Exits 1 with a message saying which step failed; every wait is bounded and the
whole run has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

DISTRIBUTIONS = ("payhook", "payhook-registration", "payhook-disputes", "payhook-notify", "payhook-django")
TENANT = "smoke-conf"
DEADLINE = time.monotonic() + 110  # the whole run, under the env's two minutes
T = TypeVar("T")


class SmokeFailed(Exception):
    """A step failed; the message says which and why."""


def remaining(limit: float) -> float:
    """`limit` seconds, or fewer when the run's deadline is nearer."""
    left = DEADLINE - time.monotonic()
    if left <= 0:
        raise SmokeFailed("the smoke test ran past its deadline")
    return min(limit, left)


def wait_for(what: str, probe: Callable[[], T | None], limit: float) -> T:
    """Poll `probe` until it returns something other than None, for at most `limit` seconds."""
    until = time.monotonic() + remaining(limit)
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= until:
            raise SmokeFailed(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(0.1)


def check_installed_from(dist_dir: Path) -> None:
    """Every payhook distribution here was installed from a wheel in `dist_dir`, none editable."""
    for name in DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SmokeFailed(f"{name} is not installed in {sys.prefix}") from None
        origin = json.loads(dist.read_text("direct_url.json") or "{}")
        url = origin.get("url", "")
        if origin.get("dir_info", {}).get("editable") or not url.startswith(dist_dir.as_uri() + "/"):
            raise SmokeFailed(f"{name} was not installed from a wheel in {dist_dir}: {origin or 'an index'}")
    import payhook  # here, after the check: the module found must be the venv's

    if not Path(payhook.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()):
        raise SmokeFailed(f"payhook was imported from {payhook.__file__}, not from {sys.prefix}")
    print(f"smoke: {', '.join(DISTRIBUTIONS)} installed from {dist_dir}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Payhook:
    """The installed `payhook` command, run on one configuration file."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.executable = str(Path(sys.executable).with_name("payhook"))
        self.config = config
        self.env = env

    def run(self, *args: str, limit: float = 30) -> str:
        """Run a command to its end; its stdout, or SmokeFailed with its output."""
        argv = [self.executable, *args, "--config", str(self.config)]
        try:
            done = subprocess.run(
                argv, env=self.env, capture_output=True, text=True, timeout=remaining(limit), check=False
            )
        except subprocess.TimeoutExpired:
            raise SmokeFailed(f"`payhook {' '.join(args)}` did not finish in {limit:.0f} s") from None
        if done.returncode != 0:
            raise SmokeFailed(
                f"`payhook {' '.join(args)}` exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                [self.executable, *args, "--config", str(self.config)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) when nothing answered."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=remaining(5)) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError as error:
        return 0, str(error)


def write_config(workdir: Path, webhook_port: int, operator_port: int) -> Path:
    config = workdir / "payhook.toml"
    config.write_text(
        f"""\
[database]
url = "sqlite:///{workdir / "smoke.db"}"

[operator]
host = "127.0.0.1"
port = {operator_port}
token = {{ "$env" = "SMOKE_OPERATOR_TOKEN" }}

[tenants.{TENANT}]
webhook_secrets = [{{ "$env" = "SMOKE_WHSEC" }}]
plugins = ["registration"]
"""
    )
    return config


def payment_for(order_id: int, path: Path) -> Path:
    """A payment_intent.succeeded paying the whole of the smoke order (350.00 USD)."""
    intent: dict[str, Any] = {
        "id": "pi_smoke_0001",
        "object": "payment_intent",
        "amount": 35000,
        "amount_received": 35000,
        "currency": "usd",
        "latest_charge": "ch_smoke_0001",
        "metadata": {"order_id": str(order_id)},
    }
    event: dict[str, Any] = {"object": "event", "type": "payment_intent.succeeded", "livemode": False}
    event["data"] = {"object": intent}
    path.write_text(json.dumps(event))
    return path


def smoke(workdir: Path) -> None:
    webhook_port, operator_port = free_port(), free_port()
    while operator_port == webhook_port:
        operator_port = free_port()
    token = secrets.token_urlsafe(32)
    env = {**os.environ, "SMOKE_WHSEC": "whsec_" + secrets.token_hex(16), "SMOKE_OPERATOR_TOKEN": token}
    env.pop("PAYHOOK_CONFIG", None)
    payhook = Payhook(write_config(workdir, webhook_port, operator_port), env)

    upgraded = payhook.run("db", "upgrade", limit=60)
    if "registration" not in upgraded:
        raise SmokeFailed(f"`payhook db upgrade` applied no migration of payhook-registration:\n{upgraded}")
    print("smoke: db upgrade applied the core's and payhook-registration's migrations")

    log = workdir / "serve.log"
    server = payhook.start("serve", "--host", "127.0.0.1", "--port", str(webhook_port), log=log)
    try:
        serve_and_pay(payhook, server, webhook_port, operator_port, token, workdir)
    except SmokeFailed as failure:
        output = log.read_text(errors="replace")
        raise SmokeFailed(f"{failure}\n--- payhook serve's output ---\n{output}") from None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def serve_and_pay(
    payhook: Payhook,
    server: subprocess.Popen[bytes],
    webhook_port: int,
    operator_port: int,
    token: str,
    workdir: Path,
) -> None:
    def up() -> bool | None:
        if server.poll() is not None:
            raise SmokeFailed(f"`payhook serve` exited {server.returncode} before answering")
        return True if http_get(f"http://127.0.0.1:{webhook_port}/healthz")[0] == 200 else None

    wait_for("`payhook serve` to answer GET /healthz with 200", up, limit=30)
    print(f"smoke: payhook serve answers on 127.0.0.1:{webhook_port}")

    order_options = ["--tenant", TENANT, "--reference", "SMOKE-1", "--currency", "usd", "--amount", "350.00"]
    created = json.loads(payhook.run("registration", "orders", "create", *order_options, "--json"))
    order_id = int(created["id"])
    print(f"smoke: created order {order_id}")

    url = f"http://127.0.0.1:{webhook_port}/{TENANT}"
    payment = payment_for(order_id, workdir / "paid.json")
    sent = payhook.run("events", "trigger", "--tenant", TENANT, "--url", url, "--json", str(payment))
    answer = json.loads(sent)
    if answer.get("status_code") != 200 or answer.get("body", {}).get("status") != "accepted":
        raise SmokeFailed(f"the signed delivery was not accepted: {sent}")
    print("smoke: the signed payment_intent.succeeded was accepted")

    def paid() -> dict[str, Any] | None:
        orders = json.loads(payhook.run("registration", "orders", "list", "--tenant", TENANT, "--json"))
        order = next((o for o in orders if int(o["id"]) == order_id), None)
        return order if order is not None and order["status"] == "paid" else None

    order = wait_for(f"order {order_id} to be paid by the handler run", paid, limit=30)
    print(f"smoke: order {order_id} is {order['status']} ({order['paid']} {order['currency']})")

    status, page = http_get(f"http://127.0.0.1:{operator_port}/", {"Authorization": f"Bearer {token}"})
    if status != 200 or "<h1>Overview</h1>" not in page or TENANT not in page:
        raise SmokeFailed(f"the operator status page answered {status} without its overview:\n{page[:2000]}")
    print("smoke: the operator status page renders")

    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=remaining(20))
    except subprocess.TimeoutExpired:
        raise SmokeFailed("`payhook serve` did not stop within 20 s of SIGTERM") from None
    # A graceful stop, after which uvicorn re-raises SIGTERM so supervisors see why (docs/cli.md).
    if code not in (0, -signal.SIGTERM):
        raise SmokeFailed(f"`payhook serve` exited {code} after SIGTERM")
    if "Application shutdown complete" not in (workdir / "serve.log").read_text(errors="replace"):
        raise SmokeFailed("`payhook serve` stopped on SIGTERM without shutting down its application")
    print("smoke: payhook serve stopped on SIGTERM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, required=True, help="the folder the wheels were installed from")
    args = parser.parse_args()
    started, dist_dir = time.monotonic(), args.dist.resolve()
    try:
        with tempfile.TemporaryDirectory(prefix="payhook-smoke-") as scratch:
            workdir = Path(scratch)
            os.chdir(workdir)  # nothing may come from the directory the script was started in
            check_installed_from(dist_dir)
            smoke(workdir)
    except SmokeFailed as failure:
        print(f"smoke: FAILED: {failure}", file=sys.stderr)
        return 1
    print(f"smoke: passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
