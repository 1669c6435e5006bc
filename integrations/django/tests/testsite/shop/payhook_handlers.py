"""The shop's handlers: a site-local payhook plugin named `shop`, found without packaging.

Tests steer it through files in its `signal_dir` setting: `<order>.fail` (raise after the
writes while it exists), `<order>.fail_once` (raise once), `<order>.pause` (after the
writes, touch `<order>.written` and wait for `<order>.go`: the test kills the process
there), `<order>.pause_after_commit` (the same once Django has committed the writes, in an
on_commit callback, touching `<order>.committed`). `commits.log` gets a line per on_commit
and after_commit callback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.db import router, transaction
from payhook import hookimpl

from testsite.shop.models import Application, Order


def pay(event: Any, ctx: Any) -> None:
    ref = event.payload["data"]["object"]["metadata"]["order_id"]
    signals = Path(ctx.config["signal_dir"])
    order = Order.objects.select_for_update().get(ref=ref)
    order.paid = True
    order.times_paid += 1
    order.save()
    Application.objects.create(order=order, stripe_event_id=event.id)
    # The site's shop (and payhook's store) may be on another database than `default`.
    transaction.on_commit(lambda: _note(signals, f"on_commit {ref}"), using=router.db_for_write(Order))
    if (signals / f"{ref}.pause_after_commit").exists():
        transaction.on_commit(lambda: _pause(signals, ref, "committed"), using=router.db_for_write(Order))
    ctx.after_commit(_note, signals, f"after_commit {ref}")
    if (signals / f"{ref}.pause").exists():
        _pause(signals, ref, "written")
    if (signals / f"{ref}.fail").exists():
        raise RuntimeError(f"order {ref}: the payment service is down")
    if (signals / f"{ref}.fail_once").exists():
        (signals / f"{ref}.fail_once").unlink()
        raise RuntimeError(f"order {ref}: the payment service is down, this once")


def _pause(signals: Path, ref: str, reached: str) -> None:
    (signals / f"{ref}.{reached}").touch()
    while not (signals / f"{ref}.go").exists():
        time.sleep(0.01)


def _note(signals: Path, line: str) -> None:
    with open(signals / "commits.log", "a") as log:
        log.write(line + "\n")


@hookimpl
def register_handlers(register: Any) -> None:
    register("payment_intent.succeeded", pay, name="shop.pay")
