"""payhook.testing itself: what the harness returns, and what its helpers catch."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
from payhook.testing import (
    FailedAttempt,
    MakePayhook,
    Run,
    StripeAPIRouter,
    assert_migrations_match,
    load_thin_event,
    store_backends,
)
from sqlalchemy import Column, Integer, Table
from sqlmodel import SQLModel

from .helpers import RecordingPlugin, create_effect_table


def failing_plugin(make_payhook: MakePayhook, **processing: Any) -> Any:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError(f"down ({n})"))
    harness = make_payhook({"rec": plugin}, processing={"max_attempts": 5, **processing})
    create_effect_table(harness.store.engine)
    return harness


@store_backends
def test_send_delivers_processes_and_returns_the_events_runs_as_frozen_records(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = make_payhook({"rec": RecordingPlugin("rec")})
    create_effect_table(harness.store.engine)
    other = stripe_event("payment_intent.succeeded")
    harness.send(other)
    event = stripe_event("payment_intent.succeeded")

    [run] = harness.send(event)

    assert isinstance(run, Run)
    assert (run.stripe_event_id, run.tenant, run.plugin, run.handler) == (event["id"], "test", "rec", "apply")
    assert (run.status, run.attempts, run.last_error) == ("succeeded", 1, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = "dead"  # type: ignore[misc]
    assert [r.stripe_event_id for r in harness.runs()] == [other["id"], event["id"]]


@store_backends
def test_send_fails_the_test_on_an_answer_it_did_not_expect(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = make_payhook({"rec": RecordingPlugin("rec")})
    create_effect_table(harness.store.engine)
    event = stripe_event("payment_intent.succeeded")
    harness.send(event)
    with pytest.raises(AssertionError, match="expected 'accepted', payhook answered 'duplicate'"):
        harness.send(event)
    with pytest.raises(AssertionError, match="payhook answered 404"):
        harness.send(stripe_event("payment_intent.succeeded"), tenant="nobody")
    assert harness.send(stripe_event("customer.created"), expect="ignored") == []


@store_backends
def test_process_rounds_gives_each_failing_run_exactly_one_more_attempt(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = failing_plugin(make_payhook)
    [run] = harness.send(stripe_event("payment_intent.succeeded"))
    assert (run.status, run.attempts) == ("failed", 1)

    for attempts in (2, 3):
        [outcome] = harness.process(include_scheduled=True, rounds=1)
        assert outcome.status == "failed"
        assert [r.attempts for r in harness.runs()] == [attempts]

    harness.process(include_scheduled=True)  # until it is done with
    [run] = harness.runs()
    assert (run.status, run.attempts) == ("dead", 5)


@store_backends
def test_failures_are_frozen_records_of_each_failed_attempt(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = failing_plugin(make_payhook, max_attempts=2)
    event = stripe_event("payment_intent.succeeded")
    harness.send(event, include_scheduled=True)

    failures = harness.failures(event["id"])
    assert all(isinstance(failure, FailedAttempt) for failure in failures)
    assert [(f.attempt, f.error_type, f.message) for f in failures] == [
        (1, "RuntimeError", "down (1)"),
        (2, "RuntimeError", "down (2)"),
    ]
    assert harness.failures(stripe_event("payment_intent.succeeded")["id"]) == []


@store_backends
def test_claim_and_execute_let_a_test_decide_when_a_run_runs(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    harness = make_payhook({"rec": plugin})
    create_effect_table(harness.store.engine)
    event = stripe_event("payment_intent.succeeded")
    harness.deliver(event)

    [claimed] = harness.claim(event["id"])
    assert [run.status for run in harness.runs()] == ["running"] and plugin.calls == []
    assert harness.execute(claimed).status == "succeeded"
    assert plugin.calls == [("apply", event["id"])]


@pytest.fixture
def stray_model() -> Iterator[None]:
    """A model table named like registration's that no migration creates, for one test."""
    table = Table("registration_stray", SQLModel.metadata, Column("id", Integer, primary_key=True))
    try:
        yield
    finally:
        SQLModel.metadata.remove(table)


@pytest.mark.skipif(
    "registration" not in {ep.name for ep in entry_points(group="payhook")},
    reason="payhook-registration is not installed",
)
@store_backends
def test_assert_migrations_match_names_a_table_the_migrations_forgot(
    payhook_database_url: str, stray_model: None
) -> None:
    with pytest.raises(
        AssertionError, match=r"plugin 'registration': its migrations and its models differ.*add_table"
    ):
        assert_migrations_match("registration", payhook_database_url)


@store_backends
def test_assert_migrations_match_says_when_the_plugin_is_not_installed(payhook_database_url: str) -> None:
    with pytest.raises(pytest.fail.Exception, match="no 'payhook' entry point named 'not-installed'"):
        assert_migrations_match("not-installed", payhook_database_url)


# -- the kit without pytest, and as a pytest plugin ---------------------------------------


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PAYHOOK_")}
    return subprocess.run(
        command, cwd=cwd, env={**environment, **env}, capture_output=True, text=True, timeout=120
    )


WITHOUT_PYTEST = """
import sys

sys.modules["pytest"] = None  # as if pytest were not installed: importing it fails

import payhook.testing
from payhook.testing import (
    HarnessFactory, MakePayhook, PayhookHarness, StripeAPIRouter, StripeEventFactory,
    assert_migrations_match, fresh_event_id, load_event, load_thin_event, signed_headers, wait_until,
)

harnesses = HarnessFactory(sys.argv[1])
harness = harnesses({})
assert isinstance(harness, PayhookHarness)
event = load_event("payment_intent.succeeded")
print("status:", harness.deliver(event).json()["status"])
print("thin:", load_thin_event()["object"])
harnesses.close()
try:
    wait_until(lambda: False, timeout=0.01, what="a state that never comes")
except AssertionError as exc:
    print("wait_until:", exc)
try:
    from payhook.testing import store_backends
except ImportError as exc:
    print("store_backends:", exc)
print("pytest loaded:", sorted(name for name in sys.modules if name.startswith("_pytest")))
"""


def test_scripts_use_the_kit_without_pytest(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(WITHOUT_PYTEST)
    result = run([sys.executable, "script.py", f"sqlite:///{tmp_path / 'payhook.db'}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "status: ignored",
        "thin: v2.core.event",
        "wait_until: timed out after 0s waiting for a state that never comes",
        "store_backends: payhook.testing.store_backends is a pytest mark: it needs pytest "
        "(import of pytest halted; None in sys.modules)",
        "pytest loaded: []",
    ]


PLUGIN_AUTHORS_TEST = """
from payhook.testing import (
    MakePayhook, StripeAPIRouter, StripeEventFactory, load_event, store_backends,
)


@store_backends
def test_every_fixture(
    make_payhook: MakePayhook,
    stripe_event: StripeEventFactory,
    stripe_api: StripeAPIRouter,
    payhook_database_url: str,
) -> None:
    assert stripe_event is load_event
    assert type(stripe_api).__name__ == "MockRouter"
    harness = make_payhook({})
    assert harness.deliver(stripe_event("payment_intent.succeeded")).json()["status"] == "ignored"
"""


# Under pytest-xdist (`-n 2`) the workers meet the unreachable server, and the summary, written
# by the controller, must still say so.
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_pytest_plugins_payhook_testing_registers_the_fixtures_and_the_summary(
    tmp_path: Path, workers: list[str]
) -> None:
    if workers and importlib.util.find_spec("xdist") is None:
        pytest.skip("pytest-xdist is not installed here (the core envs have it)")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["payhook.testing"]\n')
    (tmp_path / "test_plugin.py").write_text(textwrap.dedent(PLUGIN_AUTHORS_TEST))
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *workers]
    result = run(command, tmp_path, PAYHOOK_TEST_POSTGRES_URL=unreachable)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    summary = f"payhook: PostgreSQL store tests were SKIPPED: unreachable at {unreachable}"
    assert summary in result.stdout


# -- thin events: the sample, and send(thin=True) --------------------------------------------

THIN_SECRET = "whsec_thin_destination_secret"
METER_ERROR = "v1.billing.meter.error_report_triggered"

# A plugin typing its thin handlers with the SDK's classes, as a module of its own: the test
# loads it with `from __future__ import annotations` and without.
TYPED_PLUGIN = """
from payhook import HandlerContext, Register, hookimpl
from stripe.events import V1BillingMeterErrorReportTriggeredEventNotification
from stripe.v2.core import EventNotification


class TypedThinPlugin:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, str]] = []
        self.fetched: list[str] = []

    @hookimpl
    def register_handlers(self, register: Register) -> None:
        register("v1.billing.meter.error_report_triggered", self.on_error_report, name="on_error_report")
        register("v1.billing.*", self.on_any, name="on_any")

    def on_error_report(
        self, event: V1BillingMeterErrorReportTriggeredEventNotification, ctx: HandlerContext
    ) -> None:
        self.got.append(("on_error_report", type(event).__name__, event.related_object.id))
        if event.context is not None:
            self.fetched.append(event.fetch_related_object().id)

    def on_any(self, event: EventNotification, ctx: HandlerContext) -> None:
        self.got.append(("on_any", type(event).__name__, event.id))
"""


def typed_thin_plugin(folder: Path, future_annotations: bool) -> Any:
    source = ("from __future__ import annotations\n" if future_annotations else "") + TYPED_PLUGIN
    path = folder / f"typed_thin_plugin_{future_annotations}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TypedThinPlugin()


def thin_tenant(make_payhook: MakePayhook, plugin: object) -> Any:
    tenant = {"plugins": ["typed"], "thin_webhook_secrets": [THIN_SECRET], "stripe_api_key": "rk_test_thin"}
    return make_payhook({"typed": plugin}, tenants={"pycon": tenant})


@store_backends
@pytest.mark.parametrize("future_annotations", [True, False], ids=["future-annotations", "plain"])
def test_send_thin_delivers_the_thin_sample_to_handlers_typed_with_the_sdks_classes(
    make_payhook: MakePayhook, tmp_path: Path, future_annotations: bool
) -> None:
    plugin = typed_thin_plugin(tmp_path, future_annotations)
    harness = thin_tenant(make_payhook, plugin)
    event = load_thin_event()

    runs = harness.send(event, thin=True)

    assert [(run.handler, run.status) for run in runs] == [
        ("on_error_report", "succeeded"),
        ("on_any", "succeeded"),
    ]
    notification = "V1BillingMeterErrorReportTriggeredEventNotification"
    assert sorted(plugin.got) == [
        ("on_any", notification, event["id"]),
        ("on_error_report", notification, "mtr_test_61R9IeoQkFyDcPCCP41IL5hXMs1L7kn0"),
    ]
    [stored] = harness.events()
    assert (stored.source, stored.type, stored.stripe_event_id) == ("thin", METER_ERROR, event["id"])
    assert harness.send(event, thin=True, expect="duplicate") == runs


@store_backends
def test_a_connected_accounts_thin_sample_is_fetched_with_its_context(
    make_payhook: MakePayhook, stripe_api: StripeAPIRouter, tmp_path: Path
) -> None:
    plugin = typed_thin_plugin(tmp_path, future_annotations=True)
    harness = thin_tenant(make_payhook, plugin)
    event = load_thin_event(context="acct_1Connected")
    meter = stripe_api.get(event["related_object"]["url"]).mock(
        return_value=httpx.Response(
            200, json={"id": event["related_object"]["id"], "object": "billing.meter"}
        )
    )

    [run, _] = harness.send(event, thin=True)

    assert run.status == "succeeded", run.last_error
    request = meter.calls.last.request
    assert (request.headers["stripe-context"], request.headers["authorization"]) == (
        "acct_1Connected",
        "Bearer rk_test_thin",
    )
    assert plugin.fetched == [event["related_object"]["id"]]


@store_backends
def test_send_thin_to_a_tenant_without_thin_secrets_fails_the_test_saying_what_to_add(
    make_payhook: MakePayhook,
) -> None:
    harness = make_payhook({}, tenants={"plain": {}})
    with pytest.raises(pytest.fail.Exception, match="tenant 'plain' has no thin_webhook_secrets"):
        harness.send(load_thin_event(), thin=True)
    assert harness.events() == []
