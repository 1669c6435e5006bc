"""`payhook reconcile`: events Stripe created that never arrived are stored, with their runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from click.testing import CliRunner, Result
from payhook.cli import main
from payhook.ops.reconcile import TenantReconcile, reconcile, split_list
from payhook.stripe_api.clients import StripeClients
from payhook.testing import MakePayhook, PayhookHarness, store_backends

from .helpers import RecordingPlugin, create_effect_table

PI_SUCCEEDED = "payment_intent.succeeded"
KEYS = {"pycon": "rk_test_pycon_key", "djangocon": "rk_test_django_key"}


SLEPT: list[float] = []


@pytest.fixture(autouse=True)
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries happen, without their backoff sleeps (the SDK's, and reconcile's own)."""
    monkeypatch.setattr(stripe._http_client.HTTPClient, "_sleep_time_seconds", lambda *args, **kwargs: 0.0)
    SLEPT.clear()
    monkeypatch.setattr("payhook.ops.reconcile.time.sleep", SLEPT.append)


def list_body(items: list[str], has_more: bool) -> str:
    """A List Events answer laid out as the API lays it out, around these exact item texts."""
    data = ",\n".join(items)
    more = json.dumps(has_more)
    head = '{\n  "object": "list",\n  "data": [\n'
    return f'{head}{data}\n  ],\n  "has_more": {more},\n  "url": "/v1/events"\n}}'


class FakeEvents:
    """A List Events endpoint over `events` (newest first), `PAGE` per page unless asked
    for fewer, with failures to answer first, per key."""

    def __init__(self, events: dict[str, list[dict[str, Any]]]) -> None:
        self.texts = {
            key: [json.dumps(event, indent=2) for event in listed] for key, listed in events.items()
        }
        self.ids = {key: [event["id"] for event in listed] for key, listed in events.items()}
        self.failures: list[httpx.Response] = []
        self.requests: list[httpx.Request] = []
        self.page_size = 2

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            return self.failures.pop(0)
        key = request.headers["authorization"].removeprefix("Bearer ")
        after = request.url.params.get("starting_after")
        ids = self.ids[key]
        start = ids.index(after) + 1 if after else 0
        page = self.texts[key][start : start + self.page_size]
        return httpx.Response(200, text=list_body(page, start + self.page_size < len(ids)))


def events(stripe_event: Callable[..., dict[str, Any]], count: int) -> list[dict[str, Any]]:
    now = int(datetime.now(UTC).timestamp())
    return [stripe_event(PI_SUCCEEDED, created=now - i) for i in range(count)]


@pytest.fixture
def two_tenants(make_payhook: MakePayhook) -> Iterator[PayhookHarness]:
    harness = make_payhook(
        {"recording": RecordingPlugin("recording")},
        tenants={slug: {"plugins": ["recording"], "stripe_api_key": key} for slug, key in KEYS.items()},
    )
    create_effect_table(harness.store.engine)
    yield harness


def run(harness: PayhookHarness, **kwargs: Any) -> list[TenantReconcile]:
    clients = StripeClients(harness.config.stripe)
    try:
        return reconcile(
            harness.config,
            harness.store,
            harness.app.payhook.plugins,
            clients,
            since=datetime.now(UTC) - timedelta(days=3),
            **kwargs,
        )
    finally:
        clients.close()


@store_backends
def test_missed_events_are_stored_as_listed_with_their_runs_and_a_second_run_adds_nothing(
    two_tenants: PayhookHarness, stripe_api: Any, stripe_event: Any
) -> None:
    harness = two_tenants
    pycon, django = events(stripe_event, 5), events(stripe_event, 1)
    fake = FakeEvents({KEYS["pycon"]: pycon, KEYS["djangocon"]: django})
    stripe_api.get("/v1/events").mock(side_effect=fake)
    # Two of pycon's events were delivered; reconciling must not store them twice.
    harness.send(pycon[0], tenant="pycon")
    harness.send(pycon[3], tenant="pycon")

    reports = run(harness)

    assert [r.as_json() for r in reports] == [
        {
            "tenant": "pycon",
            "listed": 5,
            "new": 3,
            "known": 2,
            "failed": 0,
            "refused": 0,
            "pages": 3,
            "error": None,
            "problems": [],
        },
        {
            "tenant": "djangocon",
            "listed": 1,
            "new": 1,
            "known": 0,
            "failed": 0,
            "refused": 0,
            "pages": 1,
            "error": None,
            "problems": [],
        },
    ]
    first = fake.requests[0].url.params
    assert first["limit"] == "100" and "starting_after" not in first
    assert abs(int(first["created[gte]"]) - (datetime.now(UTC) - timedelta(days=3)).timestamp()) < 60
    assert [r.url.params.get("starting_after") for r in fake.requests[1:3]] == [
        pycon[1]["id"],
        pycon[3]["id"],
    ]
    stored = {(e.tenant, e.stripe_event_id): e for e in harness.events()}
    assert len(stored) == 6
    for index, event in enumerate(pycon):
        row = stored[("pycon", event["id"])]
        assert row.source == ("webhook" if index in (0, 3) else "reconcile")
        if row.source == "reconcile":
            assert row.payload == fake.texts[KEYS["pycon"]][index]  # the text the API sent
    assert stored[("djangocon", django[0]["id"])].payload == fake.texts[KEYS["djangocon"]][0]
    harness.process()
    assert {run.status for run in harness.runs()} == {"succeeded"}
    assert len(harness.runs()) == 6

    again = run(harness)
    assert [(r.listed, r.new, r.known) for r in again] == [(5, 0, 5), (1, 0, 1)]
    assert len(harness.events()) == 6


@store_backends
def test_a_429_is_retried_and_a_500_that_outlasts_the_retries_names_tenant_and_page(
    two_tenants: PayhookHarness, stripe_api: Any, stripe_event: Any
) -> None:
    harness = two_tenants
    pycon = events(stripe_event, 3)
    fake = FakeEvents({KEYS["pycon"]: pycon, KEYS["djangocon"]: []})
    stripe_api.get("/v1/events").mock(side_effect=fake)
    rate_limited = {"error": {"type": "invalid_request_error", "message": "Too many requests"}}
    fake.failures = [httpx.Response(429, json=rate_limited, headers={"Retry-After": "7"})]

    [pycon_report] = run(harness, tenants=["pycon"])
    assert (pycon_report.new, pycon_report.pages, pycon_report.error) == (3, 2, None)
    assert SLEPT == [7.0]  # as Retry-After asked

    more = events(stripe_event, 3)
    fake = FakeEvents({KEYS["pycon"]: more + pycon, KEYS["djangocon"]: []})
    stripe_api.get("/v1/events").mock(side_effect=fake)
    # Page 1 answers; page 2 fails on the first try and on both retries (max_network_retries = 2).
    server_error = httpx.Response(500, json={"error": {"type": "api_error", "message": "boom"}})
    original = fake.__call__

    def page_two_fails(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("starting_after"):
            fake.requests.append(request)
            return server_error
        return original(request)

    stripe_api.get("/v1/events").mock(side_effect=page_two_fails)
    pycon_report, django_report = run(harness)
    assert (pycon_report.listed, pycon_report.new, pycon_report.pages) == (2, 2, 1)
    assert pycon_report.error is not None and pycon_report.error.startswith("page 2: ")
    assert "500" in pycon_report.error
    assert sum(1 for r in fake.requests if r.url.params.get("starting_after")) == 3
    # The next tenant still ran.
    assert django_report.ok and django_report.pages == 1


def test_split_list_keeps_each_item_exactly_as_sent() -> None:
    items = ['{"id": "evt_1", "x": [1, {"y": "]"}]}', '{\n    "id": "evt_2"\n  }']
    body = list_body(items, True)
    assert split_list(body) == (items, True)
    assert split_list('{"data":[],"has_more":false}') == ([], False)
    for broken in ('{"object": "list"}', '{"data": [1, 2', "[]", ""):
        with pytest.raises(ValueError):
            split_list(broken)


# -- the command -------------------------------------------------------------------------


def write_config(tmp_path: Path, database_url: str, tenants: str) -> Path:
    path = tmp_path / "payhook.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n\n{tenants}', encoding="utf-8")
    return path


def payhook(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


TENANTS = """
[tenants.pycon]
webhook_secrets = [{ "$env" = "PYCON_WHSEC" }]
stripe_api_key = { "$env" = "PYCON_KEY" }

[tenants.djangocon]
webhook_secrets = ["whsec_django"]
stripe_api_key = { "$env" = "DJANGO_KEY" }
"""


@store_backends
def test_the_command_prints_one_object_per_tenant_and_exits_1_when_one_failed(
    make_payhook: MakePayhook, payhook_database_url: str, tmp_path: Path, stripe_api: Any, stripe_event: Any
) -> None:
    make_payhook({})  # a migrated store
    config = write_config(tmp_path, payhook_database_url, TENANTS)
    fake = FakeEvents({KEYS["pycon"]: events(stripe_event, 3), KEYS["djangocon"]: events(stripe_event, 1)})
    stripe_api.get("/v1/events").mock(side_effect=fake)
    # No webhook secret in the environment: reconcile verifies no signature.
    env = {"PYCON_KEY": KEYS["pycon"], "DJANGO_KEY": KEYS["djangocon"]}

    result = payhook("reconcile", "--config", str(config), "--since", "2d", "--json", env=env)
    assert result.exit_code == 0, result.output
    by_tenant = {item["tenant"]: item for item in json.loads(result.stdout)}
    assert by_tenant["pycon"]["new"] == 3 and by_tenant["djangocon"]["new"] == 1
    reconciled = fake.ids[KEYS["pycon"]][0]
    shown = payhook("events", "show", reconciled, "--config", str(config), "--json", env=env)
    assert json.loads(shown.stdout)["source"] == "reconcile"
    shown = payhook("events", "show", reconciled, "--config", str(config), env=env)
    assert "listed from the API by payhook reconcile" in shown.stdout

    result = payhook("reconcile", "--config", str(config), "--tenant", "pycon", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.lower().split("\n")[0].split() == [
        "tenant",
        "listed",
        "new",
        "known",
        "failed",
        "refused",
        "pages",
    ]
    assert result.stdout.split("\n")[1].split() == ["pycon", "3", "0", "3", "0", "0", "2"]

    # djangocon's key is not in the environment: that tenant fails, naming the key.
    result = payhook("reconcile", "--config", str(config), "--json", env={"PYCON_KEY": KEYS["pycon"]})
    assert result.exit_code == 1
    by_tenant = {item["tenant"]: item for item in json.loads(result.stdout)}
    assert by_tenant["pycon"]["error"] is None
    assert "tenants.djangocon.stripe_api_key" in by_tenant["djangocon"]["error"]
    assert KEYS["pycon"] not in result.output

    result = payhook("reconcile", "--config", str(config), "--tenant", "nope", env=env)
    assert result.exit_code == 2 and "no tenant 'nope'" in result.output


@store_backends
def test_a_refused_key_fails_the_tenant_without_showing_the_key(
    two_tenants: PayhookHarness, stripe_api: Any
) -> None:
    refused = {
        "error": {
            "type": "invalid_request_error",
            "message": f"Invalid API Key provided: {KEYS['pycon']}",
        }
    }
    stripe_api.get("/v1/events").mock(return_value=httpx.Response(401, json=refused))
    [report] = run(two_tenants, tenants=["pycon"])
    assert report.error is not None and report.error.startswith("page 1: AuthenticationError: HTTP 401")
    assert KEYS["pycon"] not in report.error and "pycon_key" not in report.error
    assert (report.pages, report.listed) == (0, 0)


@store_backends
def test_a_timeout_is_retried_by_the_sdk(
    two_tenants: PayhookHarness, stripe_api: Any, stripe_event: Any
) -> None:
    fake = FakeEvents({KEYS["pycon"]: events(stripe_event, 1), KEYS["djangocon"]: []})
    attempts: list[int] = []

    def first_times_out(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        return fake(request)

    stripe_api.get("/v1/events").mock(side_effect=first_times_out)
    [report] = run(two_tenants, tenants=["pycon"])
    assert (report.new, report.error, len(attempts)) == (1, None, 2)
