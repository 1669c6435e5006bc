"""payhook's store on another database than the handler's Django writes: the applied-marker
commits with those writes, so a run whose process died after Django's commit and before
payhook's success mark is completed without calling the handler again."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

from payhook.testing import wait_until
from site_processes import Site, deliver, write_config
from test_one_transaction import commits, new_order, order_state, payment


def store_run(store_file: Path, stripe_event_id: str) -> tuple[str, int] | None:
    with sqlite3.connect(store_file) as conn:
        row = conn.execute(
            "SELECT r.status, r.attempts FROM payhook_handler_run r JOIN payhook_event e "
            "ON e.id = r.event_id WHERE e.stripe_event_id = ?",
            (stripe_event_id,),
        ).fetchone()
    return None if row is None else (row[0], row[1])


def test_a_process_killed_between_djangos_commit_and_payhooks_applies_the_handler_once(
    site: dict[str, str], backend: str, tmp_path: Path
) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    store_file = tmp_path / "payhook.db"
    config = write_config(tmp_path / "payhook.toml", backend, shop={"signal_dir": str(signals)})
    config.write_text(
        config.read_text().replace(f'url = "django:{backend}"', f'url = "sqlite:///{store_file}"')
    )
    running = Site({**site, "TESTSITE_SHOP_DB": backend}, config)
    try:
        upgraded = running.manage("payhook", "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        url, victim = running.serve()
        ref = new_order()
        (signals / f"{ref}.pause_after_commit").touch()
        event = payment(ref)
        assert deliver(f"{url}/conf", event).status_code == 200
        wait_until((signals / f"{ref}.committed").exists)  # Django committed; payhook has not

        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        assert order_state(ref) == (True, 1, 1)
        assert store_run(store_file, event["id"]) == ("running", 1)

        # Started again: the run is reclaimed once its lease runs out, finds its marker, and
        # only its success mark is written.
        (signals / f"{ref}.go").touch()
        running.serve()
        wait_until(lambda: (store_run(store_file, event["id"]) or ("",))[0] == "succeeded")
        assert order_state(ref) == (True, 1, 1)
        assert commits(signals).count(f"on_commit {ref}") == 1
    finally:
        running.close()


def test_a_handler_that_raises_leaves_neither_its_writes_nor_a_marker(
    site: dict[str, str], backend: str, tmp_path: Path
) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    store_file = tmp_path / "payhook.db"
    config = write_config(tmp_path / "payhook.toml", backend, shop={"signal_dir": str(signals)})
    config.write_text(
        config.read_text().replace(f'url = "django:{backend}"', f'url = "sqlite:///{store_file}"')
    )
    running = Site({**site, "TESTSITE_SHOP_DB": backend}, config)
    try:
        assert running.manage("payhook", "db", "upgrade").returncode == 0
        url, _ = running.serve()
        ref = new_order()
        (signals / f"{ref}.fail_once").touch()
        event = payment(ref)
        assert deliver(f"{url}/conf", event).status_code == 200
        # The first attempt's writes rolled back with no marker: the second one ran it.
        wait_until(lambda: store_run(store_file, event["id"]) == ("succeeded", 2))
        assert order_state(ref) == (True, 1, 1)
    finally:
        running.close()
