"""A handler's Django ORM writes and its run's success mark commit in one transaction on
Django's connection: a raise leaves nothing, a kill before the commit applies it once."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from payhook.testing import load_event, wait_until
from site_processes import Site, deliver, write_config


@pytest.fixture
def signals(tmp_path: Path) -> Path:
    path = tmp_path / "signals"
    path.mkdir()
    return path


@pytest.fixture
def site_for(site: dict[str, str], backend: str, tmp_path: Path, signals: Path) -> Iterator[Any]:
    """A factory of the site's processes, payhook's store on `backend` (worker on or off)."""
    made: list[Site] = []

    def make(*, worker: bool = True) -> Site:
        config = write_config(
            tmp_path / "payhook.toml", backend, worker=worker, shop={"signal_dir": str(signals)}
        )
        running = Site({**site, "TESTSITE_SHOP_DB": backend}, config)
        made.append(running)
        return running

    yield make
    for running in made:
        running.close()


def new_order() -> str:
    from testsite.shop.models import Order

    ref = uuid.uuid4().hex[:12]
    Order.objects.create(ref=ref)
    return ref


def payment(ref: str) -> dict[str, Any]:
    return load_event("payment_intent.succeeded", data__object__metadata={"order_id": ref})


def order_state(ref: str) -> tuple[bool, int, int]:
    from testsite.shop.models import Application, Order

    order = Order.objects.get(ref=ref)
    return order.paid, order.times_paid, Application.objects.filter(order=order).count()


def run_state(alias: str, stripe_event_id: str) -> tuple[str, int] | None:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT r.status, r.attempts FROM payhook_handler_run r JOIN payhook_event e "
            "ON e.id = r.event_id WHERE e.stripe_event_id = %s",
            [stripe_event_id],
        )
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1])


def commits(signals: Path) -> list[str]:
    log = signals / "commits.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_handler_that_raises_after_its_django_write_leaves_nothing(
    site_for: Any, backend: str, signals: Path
) -> None:
    url, _ = site_for().serve()
    ref = new_order()
    (signals / f"{ref}.fail").touch()
    event = payment(ref)
    assert deliver(f"{url}/conf", event).status_code == 200

    wait_until(lambda: run_state(backend, event["id"]) == ("dead", 3))
    assert order_state(ref) == (False, 0, 0)  # three attempts, none of them left a trace
    assert commits(signals) == []  # no on_commit, no after_commit after a rollback

    # Fixed, and redelivered (a dead run is re-armed): paid once.
    (signals / f"{ref}.fail").unlink()
    assert deliver(f"{url}/conf", event).json()["status"] == "duplicate"
    wait_until(lambda: run_state(backend, event["id"]) == ("succeeded", 4))
    assert order_state(ref) == (True, 1, 1)
    wait_until(lambda: len(commits(signals)) == 2)
    assert sorted(commits(signals)) == [f"after_commit {ref}", f"on_commit {ref}"]


def test_a_failed_attempt_is_retried_and_pays_once(site_for: Any, backend: str, signals: Path) -> None:
    url, _ = site_for().serve()
    ref = new_order()
    (signals / f"{ref}.fail_once").touch()
    event = payment(ref)
    assert deliver(f"{url}/conf", event).status_code == 200
    wait_until(lambda: run_state(backend, event["id"]) == ("succeeded", 2))
    assert order_state(ref) == (True, 1, 1)
    wait_until(lambda: len(commits(signals)) == 2)
    assert sorted(commits(signals)) == [f"after_commit {ref}", f"on_commit {ref}"]


@pytest.mark.parametrize("where", ["serve", "worker"])
def test_a_process_killed_before_its_commit_applies_the_handler_once(
    site_for: Any, backend: str, signals: Path, where: str
) -> None:
    if where == "serve":
        running = site_for()
        url, victim = running.serve()
    else:
        running = site_for(worker=False)
        url, _ = running.serve()
        victim = running.worker()
    ref = new_order()
    (signals / f"{ref}.pause").touch()
    event = payment(ref)
    assert deliver(f"{url}/conf", event).status_code == 200
    wait_until((signals / f"{ref}.written").exists)  # the Django write is in, not committed

    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert order_state(ref) == (False, 0, 0)

    # Started again, the run's lease runs out and it is run again, to completion, once.
    (signals / f"{ref}.go").touch()
    if where == "serve":
        running.serve()
    else:
        running.worker()
    wait_until(lambda: (run_state(backend, event["id"]) or ("",))[0] == "succeeded")
    assert order_state(ref) == (True, 1, 1)
    wait_until(lambda: len(commits(signals)) == 2)
    assert sorted(commits(signals)) == [f"after_commit {ref}", f"on_commit {ref}"]


def test_inline_and_queued_handlers_use_the_sync_orm(site_for: Any, backend: str, signals: Path) -> None:
    """No SynchronousOnlyOperation: inline runs and queued runs are off the event loop."""
    url, _ = site_for().serve()
    queued, inline = new_order(), new_order()
    queued_event, inline_event = payment(queued), payment(inline)
    assert deliver(f"{url}/conf", queued_event).status_code == 200
    answer = deliver(f"{url}/live", inline_event)
    assert answer.status_code == 200, answer.text
    assert run_state(backend, inline_event["id"]) == ("succeeded", 1)
    wait_until(lambda: run_state(backend, queued_event["id"]) == ("succeeded", 1))
    assert order_state(queued) == order_state(inline) == (True, 1, 1)
