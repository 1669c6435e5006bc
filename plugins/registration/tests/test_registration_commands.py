"""`payhook registration orders create|list`, run as the real `payhook` command.

The organiser's first hour: create a test order from the shell, pay it with a signed test
event through a running `payhook serve`, and see it paid, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from payhook.testing import TEST_SECRET, store_backends, wait_until

TENANT = "conf"


def payhook(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "payhook", *args],
        env={**os.environ, "CONF_WHSEC": TEST_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"payhook {' '.join(args)}: {done.stderr}"
    return done


@pytest.fixture
def config(tmp_path: Path, payhook_database_url: str) -> str:
    path = tmp_path / "payhook.toml"
    path.write_text(
        f'[database]\nurl = "{payhook_database_url}"\n\n'
        f'[tenants.{TENANT}]\nwebhook_secrets = [{{ "$env" = "CONF_WHSEC" }}]\nplugins = ["registration"]\n\n'
        '[tenants.shop]\nwebhook_secrets = ["whsec_shop"]\nplugins = []\n'
    )
    payhook("db", "upgrade", "--config", str(path))
    return str(path)


def create(config: str, *options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return payhook("registration", "orders", "create", "--config", config, *options, check=check)


def listed(config: str, *options: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(
        payhook("registration", "orders", "list", "--config", config, "--json", *options).stdout
    )
    return result


@pytest.fixture
def served(config: str) -> Iterator[str]:
    """`payhook serve` (with its worker) on a free port; its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "payhook", "serve", "--config", config, "--port", str(port)],
        env={**os.environ, "CONF_WHSEC": TEST_SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, "payhook serve exited"
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, what="payhook serve answering /healthz")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@store_backends
def test_an_order_created_from_the_shell_is_paid_by_its_event(
    config: str, served: str, tmp_path: Path
) -> None:
    created = create(
        config,
        "--tenant",
        TENANT,
        "--reference",
        "PYCON-0042",
        "--currency",
        "USD",
        "--amount",
        "350",
        "--json",
    )
    order = json.loads(created.stdout)
    assert {key: order[key] for key in ("tenant", "reference", "status", "total", "paid", "currency")} == {
        "tenant": TENANT,
        "reference": "PYCON-0042",
        "status": "pending",
        "total": "350.00",
        "paid": "0.00",
        "currency": "usd",
    }

    event = {
        "object": "event",
        "type": "payment_intent.succeeded",
        "livemode": False,
        "data": {
            "object": {
                "id": "pi_cli_test",
                "object": "payment_intent",
                "amount": 35000,
                "amount_received": 35000,
                "currency": "usd",
                "latest_charge": "ch_cli_test",
                "metadata": {"order_id": str(order["id"])},
            }
        },
    }
    (tmp_path / "paid.json").write_text(json.dumps(event))
    payhook(
        "events",
        "trigger",
        "--config",
        config,
        "--tenant",
        TENANT,
        "--url",
        f"{served}/{TENANT}",
        str(tmp_path / "paid.json"),
    )

    wait_until(lambda: listed(config)[0]["status"] == "paid", what="the order paid")
    [paid] = listed(config, "--tenant", TENANT, "--status", "paid")
    assert (paid["id"], paid["paid"]) == (order["id"], "350.00")
    table = payhook("registration", "orders", "list", "--config", config).stdout.splitlines()
    assert table[0].split() == [
        "ID",
        "TENANT",
        "REFERENCE",
        "STATUS",
        "TOTAL",
        "PAID",
        "CURRENCY",
        "CREATED",
        "(UTC)",
    ]
    assert table[1].split()[:7] == [str(order["id"]), TENANT, "PYCON-0042", "paid", "350.00", "350.00", "usd"]


def test_list_filters_and_orders_newest_first(config: str) -> None:
    for reference, amount in [("A-1", "10"), ("A-2", "20.5")]:
        create(config, "--tenant", TENANT, "--reference", reference, "--currency", "eur", "--amount", amount)
    assert [order["reference"] for order in listed(config)] == ["A-2", "A-1"]
    assert [order["total"] for order in listed(config, "--limit", "1")] == ["20.50"]
    assert listed(config, "--status", "paid") == []


REFUSED = [
    (["--tenant", "nope"], 2, "no tenant 'nope'"),
    (["--tenant", "shop"], 2, "tenant 'shop' does not enable the registration plugin"),
    (["--currency", "xyz"], 2, "unknown currency 'xyz'"),
    (["--currency", "jpy", "--amount", "20.5"], 2, "more decimals than the currency allows"),
    (["--amount", "0"], 2, "--amount must be a number above 0"),
    (["--amount", "nan"], 2, "--amount must be a number above 0"),
    (["--amount", "ten"], 2, "--amount 'ten' is not a number"),
    (["--reference", "TAKEN"], 1, "tenant 'conf' has an order 'TAKEN' already"),
]


# Nine `payhook` process starts in turn: on two busy cores each may take seconds.
@pytest.mark.timeout(180)
def test_a_refused_order_is_not_stored(config: str) -> None:
    # One database for every case (each `payhook` run is a process start): the cases are
    # checked in turn, and the store must hold only the first order after all of them.
    create(config, "--tenant", TENANT, "--reference", "TAKEN", "--currency", "usd", "--amount", "5")
    for options, status, message in REFUSED:
        given = {"--tenant": TENANT, "--reference": "NEW", "--currency": "usd", "--amount": "5"}
        given.update(zip(options[::2], options[1::2], strict=True))
        refused = create(config, *[part for pair in given.items() for part in pair], check=False)
        assert refused.returncode == status and message in refused.stderr, (options, refused.stderr)
    assert [order["reference"] for order in listed(config)] == ["TAKEN"]


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "payhook.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///orders.db"\n\n[tenants.{TENANT}]\nwebhook_secrets = ["whsec_x"]\n'
        'plugins = ["registration"]\n'
    )
    refused = create(
        str(path), "--tenant", TENANT, "--reference", "R", "--currency", "usd", "--amount", "1", check=False
    )
    assert refused.returncode == 1 and "run `payhook db upgrade`" in refused.stderr
    assert not (tmp_path / "orders.db").exists()


def test_the_commands_have_help() -> None:
    shown = payhook("registration", "orders", "--help").stdout
    assert "create" in shown and "list" in shown
    for command in ("create", "list"):
        assert "--config" in payhook("registration", "orders", command, "--help").stdout
