"""`payhook reconcile` against a Stripe API that misbehaves: it must end, and say why.

The slow cases need a real server (respx answers at once), so `FakeStripe` is one: an HTTP
server on 127.0.0.1, in a thread, that `[stripe] api_base` points at.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from payhook.ops.reconcile import reconcile
from payhook.stripe_api.clients import StripeClients
from payhook.testing import MakePayhook, PayhookHarness, store_backends

from .helpers import RecordingPlugin, create_effect_table
from .test_reconcile import list_body, payhook, write_config

PI_SUCCEEDED = "payment_intent.succeeded"
KEYS = {"pycon": "rk_test_pycon_key", "djangocon": "rk_test_django_key"}
# A byte every half second: each read is quick, the whole answer never comes.
TRICKLE_INTERVAL = 0.5


class FakeStripe:
    """List Events on 127.0.0.1: `pages(key, starting_after)` gives each answer's body;
    the answers to keys in `trickling` come one byte every TRICKLE_INTERVAL, forever."""

    def __init__(self, pages: Callable[[str, str | None], str]) -> None:
        self.pages = pages
        self.trickling: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        self.stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                after = parse_qs(urlsplit(self.path).query).get("starting_after", [None])[0]
                fake.requests.append((key, after))
                if key in fake.trickling:
                    self.trickle()
                    return
                body = fake.pages(key, after).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def trickle(self) -> None:
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                answer = head + b'{"object": "list", "data": [' + b" " * 1_000_000
                for index in range(len(answer)):
                    if fake.stopping.wait(TRICKLE_INTERVAL):
                        return
                    try:
                        self.wfile.write(answer[index : index + 1])
                    except OSError:  # the client gave up: what the test wants
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeStripe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def texts(stripe_event: Callable[..., dict[str, Any]], count: int, **changes: Any) -> list[str]:
    now = int(datetime.now(UTC).timestamp())
    return [
        json.dumps(stripe_event(PI_SUCCEEDED, created=now - i, **changes), indent=2) for i in range(count)
    ]


def config_for(tmp_path: Path, database_url: str, api_base: str, *, retries: int = 0) -> Path:
    return write_config(
        tmp_path,
        database_url,
        f"""
[stripe]
api_base = "{api_base}"
timeout = 3
max_network_retries = {retries}

[tenants.pycon]
webhook_secrets = ["whsec_pycon"]
stripe_api_key = "{KEYS["pycon"]}"

[tenants.djangocon]
webhook_secrets = ["whsec_django"]
stripe_api_key = "{KEYS["djangocon"]}"
""",
    )


@pytest.fixture
def store_url(make_payhook: MakePayhook, payhook_database_url: str) -> str:
    make_payhook({})  # a migrated store
    return payhook_database_url


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cycle", [1, 2], ids=["same-page-forever", "two-pages-in-turn"])
def test_pages_that_make_no_progress_end_the_tenant_as_failed(
    store_url: str, tmp_path: Path, stripe_event: Any, cycle: int
) -> None:
    """has_more: true forever, the cursor ignored: the listing stops, the tenant fails."""
    pycon = [texts(stripe_event, 2) for _ in range(cycle)]
    django = texts(stripe_event, 1)
    served = {KEYS["pycon"]: 0}

    def pages(key: str, after: str | None) -> str:
        if key == KEYS["djangocon"]:
            return list_body(django, False)
        page = pycon[served[key] % cycle]
        served[key] += 1
        return list_body(page, True)

    with FakeStripe(pages) as fake:
        config = config_for(tmp_path, store_url, fake.base)
        result = payhook("reconcile", "--config", str(config), "--since", "1d", "--json")

    assert result.exit_code == 1, result.output
    by_tenant = {item["tenant"]: item for item in json.loads(result.stdout)}
    failed = by_tenant["pycon"]
    assert failed["error"].startswith(f"page {cycle + 1}: no progress")
    assert (failed["pages"], failed["new"]) == (cycle, 2 * cycle)  # what it listed stays stored
    assert by_tenant["djangocon"]["error"] is None and by_tenant["djangocon"]["new"] == 1
    assert sum(1 for key, _ in fake.requests if key == KEYS["pycon"]) == cycle + 1


@pytest.mark.timeout(30)
def test_an_answer_that_trickles_ends_each_call_at_the_timeout_and_fails_the_tenant(
    store_url: str, tmp_path: Path, stripe_event: Any
) -> None:
    """Every read is quick, the whole answer never comes: each try ends after `timeout`
    seconds in all (not per read), the SDK's retry too, and the tenant is failed."""
    django = texts(stripe_event, 1)
    with FakeStripe(lambda key, after: list_body(django, False)) as fake:
        fake.trickling.add(KEYS["pycon"])
        config = config_for(tmp_path, store_url, fake.base, retries=1)
        result = payhook("reconcile", "--config", str(config), "--since", "1d")

    assert result.exit_code == 1, result.output
    assert "error: pycon: page 1: StripeTimeout: no complete answer within 3 s" in result.stderr
    assert "[stripe] timeout" in result.stderr
    assert "djangocon" not in result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["djangocon"][2] == "1"  # the tenant after it still stored its event
    assert sum(1 for key, _ in fake.requests if key == KEYS["pycon"]) == 2  # the try and its retry


# -- what the API lists, judged as a delivery of it would be ------------------------------


def run(harness: PayhookHarness) -> Any:
    clients = StripeClients(harness.config.stripe)
    try:
        [report] = reconcile(
            harness.config,
            harness.store,
            harness.app.payhook.plugins,
            clients,
            since=datetime.now(UTC) - timedelta(days=1),
        )
    finally:
        clients.close()
    return report


@store_backends
def test_an_event_over_max_body_bytes_is_refused_with_its_reason_and_the_rest_stored(
    make_payhook: MakePayhook, stripe_api: Any, stripe_event: Any
) -> None:
    harness = make_payhook(
        {"recording": RecordingPlugin("recording")},
        tenants={"pycon": {"plugins": ["recording"], "stripe_api_key": KEYS["pycon"]}},
        ingest={"max_body_bytes": 20_000},
    )
    create_effect_table(harness.store.engine)
    small = texts(stripe_event, 2)
    big_event = stripe_event(PI_SUCCEEDED, data__object__metadata={"blob": "x" * 30_000})
    big = json.dumps(big_event, indent=2)
    stripe_api.get("/v1/events").mock(
        return_value=httpx.Response(200, text=list_body([small[0], big, small[1]], False))
    )

    report = run(harness)

    assert (report.listed, report.new, report.refused, report.failed) == (3, 2, 1, 0)
    assert not report.ok and report.error is None
    [problem] = report.problems
    assert problem.startswith(f"{big_event['id']}: {len(big.encode())} bytes, over [ingest] max_body_bytes")
    assert "(20000)" in problem
    stored = {event.stripe_event_id for event in harness.events()}
    assert stored == {json.loads(text)["id"] for text in small}


@store_backends
def test_an_event_of_another_connect_account_is_stored_without_runs_like_a_livemode_mismatch(
    make_payhook: MakePayhook, stripe_api: Any, stripe_event: Any
) -> None:
    harness = make_payhook(
        {"recording": RecordingPlugin("recording")},
        tenants={
            "pycon": {
                "plugins": ["recording"],
                "stripe_api_key": KEYS["pycon"],
                "stripe_account": "acct_1Mine",
            }
        },
    )
    create_effect_table(harness.store.engine)
    [mine] = texts(stripe_event, 1, account="acct_1Mine")
    [unnamed] = texts(stripe_event, 1)
    [other] = texts(stripe_event, 1, account="acct_1Other")
    route = stripe_api.get("/v1/events").mock(
        return_value=httpx.Response(200, text=list_body([mine, unnamed, other], False))
    )

    report = run(harness)

    assert route.calls.last.request.headers["stripe-account"] == "acct_1Mine"
    assert (report.listed, report.new, report.error) == (3, 3, None)
    events = {event.stripe_event_id: event for event in harness.events()}
    other_id = json.loads(other)["id"]
    assert events[other_id].ignored_reason == (
        "an event of account acct_1Other; tenants.pycon.stripe_account is 'acct_1Mine'"
    )
    assert harness.runs(other_id) == []
    for text in (mine, unnamed):
        event_id = json.loads(text)["id"]
        assert events[event_id].ignored_reason is None
        assert len(harness.runs(event_id)) == 1


@pytest.mark.timeout(30)
def test_handler_calls_through_the_same_clients_get_the_same_total_bound() -> None:
    """`ctx.fetch_latest()` (StripeClients.retrieve) and the SDK's async methods end too."""
    import asyncio

    import stripe
    from payhook.config import StripeConfig, TenantConfig

    tenant = TenantConfig(slug="pycon", webhook_secrets=("whsec_pycon",), stripe_api_key=KEYS["pycon"])
    with FakeStripe(lambda key, after: "{}") as fake:
        fake.trickling.add(KEYS["pycon"])
        clients = StripeClients(StripeConfig(api_base=fake.base, timeout=1, max_network_retries=0))
        try:
            with pytest.raises(stripe.APIConnectionError, match=r"no complete answer within 1 s"):
                clients.retrieve(tenant, "/v1/payment_intents/pi_1")
            client = clients.for_tenant(tenant)
            with pytest.raises(stripe.APIConnectionError, match=r"no complete answer within 1 s"):
                asyncio.run(client.v1.payment_intents.retrieve_async("pi_2"))
        finally:
            clients.close()
    assert [after for key, after in fake.requests] == [None, None]
