"""payhook's events, runs and failures in Django's admin, read-only, and its replay action."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from payhook.testing import wait_until
from site_processes import Site, deliver, write_config
from test_one_transaction import new_order, order_state, payment, run_state


def run_id_of(alias: str, stripe_event_id: str) -> int:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT r.id FROM payhook_handler_run r JOIN payhook_event e ON e.id = r.event_id "
            "WHERE e.stripe_event_id = %s",
            [stripe_event_id],
        )
        return int(cursor.fetchone()[0])


def test_the_admin_shows_a_dead_run_and_its_failure_and_replays_it(
    site: dict[str, str], backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    signals = tmp_path / "signals"
    signals.mkdir()
    config = write_config(tmp_path / "payhook.toml", backend, shop={"signal_dir": str(signals)})
    monkeypatch.setattr(settings, "PAYHOOK_CONFIG", str(config))
    running = Site({**site, "TESTSITE_SHOP_DB": backend}, config)
    try:
        url, _ = running.serve()
        ref = new_order()
        (signals / f"{ref}.fail").touch()
        event = payment(ref)
        assert deliver(f"{url}/conf", event).status_code == 200
        wait_until(lambda: run_state(backend, event["id"]) == ("dead", 3))
        run_id = run_id_of(backend, event["id"])

        name = f"admin-{uuid.uuid4().hex[:8]}"
        user = User.objects.create_superuser(name, f"{name}@example.com", "x")
        client = Client()
        client.force_login(user)

        events = client.get("/admin/payhook_django/event/", {"q": event["id"]})
        assert events.status_code == 200
        assert event["id"] in events.content.decode()
        failures = client.get("/admin/payhook_django/runfailure/").content.decode()
        assert "RuntimeError" in failures
        assert f"order {ref}: the payment service is down" in failures
        shown = client.get(f"/admin/payhook_django/handlerrun/{run_id}/change/").content.decode()
        assert f"order {ref}: the payment service is down" in shown
        # Read-only: no add page.
        assert client.get("/admin/payhook_django/handlerrun/add/").status_code == 403

        (signals / f"{ref}.fail").unlink()  # fixed; now replay it from the admin
        answer = client.post(
            "/admin/payhook_django/handlerrun/",
            {"action": "replay_runs", "_selected_action": [str(run_id)]},
            follow=True,
        )
        assert answer.status_code == 200
        assert "1 run(s) made due" in answer.content.decode()
        wait_until(lambda: run_state(backend, event["id"]) == ("succeeded", 4))  # the worker ran it
        assert order_state(ref) == (True, 1, 1)
    finally:
        running.close()
