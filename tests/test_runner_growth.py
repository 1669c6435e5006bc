"""Runner growth: a worker whose runs wait on Stripe adds runners up to `max_concurrency`,
drops them when idle, and keeps each run's guarantees; `RunnerGrowth`'s rules."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from payhook import HandlerContext, hookimpl
from payhook.config import MAX_RUNNERS, Config, ConfigError, StripeConfig
from payhook.execute.processing import Processor
from payhook.execute.worker import CPU_BOUND, REST_WINDOWS, RunnerGrowth, Window, Worker
from payhook.testing import MakePayhook, PayhookHarness, store_backends, wait_until

PI_SUCCEEDED = "payment_intent.succeeded"


class SlowStripe(ThreadingHTTPServer):
    """Stripe's GET /v1/payment_intents/<id> on 127.0.0.1, answered after `latency`."""

    daemon_threads = True

    def __init__(self, latency: float) -> None:
        super().__init__(("127.0.0.1", 0), SlowStripeHandler)
        self.latency = latency
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class SlowStripeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: SlowStripe

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.in_flight += 1
            self.server.peak = max(self.server.peak, self.server.in_flight)
        try:
            # The API's latency, which the worker overlaps: not a test waiting for a state.
            time.sleep(self.server.latency)
        finally:
            with self.server.lock:
                self.server.in_flight -= 1
        intent = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"id": intent, "object": "payment_intent", "status": "canceled"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_stripe() -> Iterator[SlowStripe]:
    server = SlowStripe(latency=0.05)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class FetchingPlugin:
    """Asks Stripe for the intent's current state, then writes nothing: all its time is the API's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, int] = {}

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register(PI_SUCCEEDED, self.handle, name="handle")

    def handle(self, event: Any, ctx: HandlerContext) -> None:
        status = ctx.fetch_latest()["status"]
        with self.lock:
            self.statuses[event.id] = self.statuses.get(event.id, 0) + 1
        assert status == "canceled"


def growing_worker(harness: PayhookHarness, api: SlowStripe, *, concurrency: int, ceiling: int) -> Worker:
    """A worker over the harness's store whose tenants' Stripe calls go to `api`."""
    payhook = harness.app.payhook
    stripe = StripeConfig(api_base=api.base, rate_limit=1000.0, max_network_retries=0)
    config = dataclasses.replace(payhook.config, stripe=stripe)
    processor = Processor(config, payhook.store, payhook.plugins, payhook.runs)
    return Worker(
        processor,
        concurrency=concurrency,
        max_concurrency=ceiling,
        batch_size=8,
        poll_interval=0.05,
        growth_window=0.2,
    )


def deliver(harness: PayhookHarness, stripe_event: Any, count: int) -> None:
    for number in range(count):
        harness.deliver(stripe_event(PI_SUCCEEDED, data__object__id=f"pi_growth_{number}"))


@store_backends
def test_runners_grow_while_runs_wait_on_the_api_stay_bounded_and_shrink_back_when_idle(
    make_payhook: MakePayhook, slow_stripe: SlowStripe, stripe_event: Any
) -> None:
    plugin = FetchingPlugin()
    harness = make_payhook(
        {"fetch": plugin}, tenants={"pycon": {"plugins": ["fetch"], "stripe_api_key": "rk_test_growth"}}
    )
    events = 120
    deliver(harness, stripe_event, events)
    worker = growing_worker(harness, slow_stripe, concurrency=2, ceiling=6)
    most = 0

    def grown() -> bool:
        nonlocal most
        most = max(most, worker.runners)
        return most > 2

    harness.client.portal.start_task_soon(worker.run)
    try:
        wait_until(grown, what="more runners than concurrency")

        def drained() -> bool:
            grown()
            return len(plugin.statuses) == events and all(r.status == "succeeded" for r in harness.runs())

        wait_until(drained, what="every run succeeded")
        wait_until(lambda: worker.runners == 2, what="the runners back to concurrency once idle")
    finally:
        harness.client.portal.call(worker.stop, 5.0)
        worker.processor.stripe_clients.close()
    assert 2 < most <= 6
    assert 2 < slow_stripe.peak <= 6  # calls in flight: never more than max_concurrency runners
    assert set(plugin.statuses.values()) == {1}  # each run's handler once, each run succeeded once
    assert worker.runners == 0


def test_a_worker_whose_ceiling_is_its_concurrency_never_grows(
    make_payhook: MakePayhook, slow_stripe: SlowStripe, stripe_event: Any
) -> None:
    plugin = FetchingPlugin()
    harness = make_payhook(
        {"fetch": plugin}, tenants={"pycon": {"plugins": ["fetch"], "stripe_api_key": "rk_test_growth"}}
    )
    events = 40
    deliver(harness, stripe_event, events)
    worker = growing_worker(harness, slow_stripe, concurrency=2, ceiling=2)
    harness.client.portal.start_task_soon(worker.run)
    try:
        wait_until(lambda: len(plugin.statuses) == events, what="every run")
    finally:
        harness.client.portal.call(worker.stop, 5.0)
        worker.processor.stripe_clients.close()
    assert slow_stripe.peak == 2


def window(runners: int, rate: float, *, utilization: float = 1.0, cpu: float = 0.1) -> Window:
    return Window(runners=runners, seconds=1.0, finished=round(rate), busy=runners * utilization, cpu=cpu)


def test_growth_doubles_while_throughput_follows_and_stops_at_the_ceiling() -> None:
    growth = RunnerGrowth(4, 12)
    assert growth.decide(window(4, 40)) == 8
    assert growth.decide(window(8, 80)) == 12  # it paid: keep growing
    assert growth.decide(window(12, 118)) == 12  # the ceiling


def test_a_probe_that_does_not_pay_is_undone_and_the_next_comes_later_and_smaller() -> None:
    """Runs waiting on SQLite's one writer, or a tenant's rate_limit: more runners, no more runs."""
    growth = RunnerGrowth(4, 32)
    assert growth.decide(window(4, 100)) == 8
    assert growth.decide(window(8, 104)) == 4
    for _ in range(REST_WINDOWS):
        assert growth.decide(window(4, 100)) == 4
    assert growth.decide(window(4, 100)) == 6


def test_a_cpu_bound_process_does_not_grow() -> None:
    growth = RunnerGrowth(4, 32)
    assert growth.decide(window(4, 400, cpu=CPU_BOUND)) == 4


def test_runners_that_wait_for_runs_shrink_to_what_the_load_needs_then_to_concurrency() -> None:
    growth = RunnerGrowth(2, 32)
    assert growth.decide(window(2, 40)) == 4
    assert growth.decide(window(4, 80)) == 6
    # Three runners' worth of runs for six runners: keep what carries them with headroom.
    assert growth.decide(window(6, 60, utilization=0.5 - 0.01)) == 4
    assert growth.decide(window(4, 0, utilization=0.0)) == 2


def test_runs_that_never_finish_tell_nothing_and_add_no_runner() -> None:
    assert RunnerGrowth(2, 32).decide(window(2, 0)) == 2


def test_max_concurrency_is_bounded() -> None:
    base = {"tenants": {"t": {"webhook_secrets": ["whsec_x"]}}}
    assert Config.from_mapping(base).processing.max_concurrency == 32
    with pytest.raises(ConfigError, match="max_concurrency"):
        Config.from_mapping({**base, "processing": {"max_concurrency": MAX_RUNNERS + 1}})
