"""The site's own handlers found without packaging, payhook's commands through manage.py,
and one ASGI app serving payhook beside Django."""

from __future__ import annotations

from pathlib import Path

from payhook.testing import load_event, wait_until
from site_processes import Site, deliver, write_config
from test_one_transaction import new_order, order_state, run_state


def test_a_tenant_enabling_an_app_label_that_does_not_exist_is_reported(
    site: dict[str, str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "payhook.toml", "default", shop={"signal_dir": str(tmp_path)})
    config.write_text(
        config.read_text().replace(
            'plugins = ["shop"]\n\n[tenants.conf', 'plugins = ["shopp"]\n\n[tenants.conf', 1
        )
    )
    checked = Site(site, config).manage("payhook", "config", "check")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "unknown plugin 'shopp'" in checked.stdout + checked.stderr
    assert "did you mean 'shop'?" in checked.stdout + checked.stderr


def test_the_site_plugin_is_found_without_an_entry_point(site: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "payhook.toml", "default", shop={"signal_dir": str(tmp_path)})
    listed = Site(site, config).manage("payhook", "plugins", "list")
    assert listed.returncode == 0, listed.stderr
    assert "shop" in listed.stdout


def test_one_asgi_app_serves_payhook_under_its_prefix_and_django_elsewhere(
    site: dict[str, str], backend: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "payhook.toml", backend, shop={"signal_dir": str(tmp_path)})
    running = Site({**site, "TESTSITE_SHOP_DB": backend}, config)
    try:
        url, _ = running.uvicorn()  # healthy at /stripe/healthz: payhook's lifespan ran
        import httpx

        assert httpx.get(f"{url}/").text == "the shop"
        ref = new_order()
        event = load_event("payment_intent.succeeded", data__object__metadata={"order_id": ref})
        assert deliver(f"{url}/stripe/conf", event).status_code == 200
        wait_until(lambda: run_state(backend, event["id"]) == ("succeeded", 1))  # its worker ran
        assert order_state(ref) == (True, 1, 1)
    finally:
        running.close()
