"""`ctx.stripe`: each tenant's handlers call Stripe with that tenant's key and account."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
import stripe
from payhook import HandlerContext, hookimpl
from payhook.config import StripeConfig, TenantConfig
from payhook.stripe_api.clients import NoStripeKey, StripeClients
from payhook.testing import MakePayhook, store_backends

PI_SUCCEEDED = "payment_intent.succeeded"


class FetchingPlugin:
    """Retrieves the event's PaymentIntent through ctx.stripe and keeps what it got."""

    def __init__(self) -> None:
        self.fetched: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register(PI_SUCCEEDED, self.fetch, name="fetch")

    def fetch(self, event: Any, ctx: HandlerContext) -> None:
        intent = ctx.stripe.v1.payment_intents.retrieve(event.data.object.id)
        with self.lock:
            self.fetched.append((ctx.tenant.slug, intent.status))


def intent(intent_id: str, status: str = "succeeded") -> dict[str, Any]:
    return {"id": intent_id, "object": "payment_intent", "status": status, "amount": 4200}


@store_backends
def test_two_tenants_call_stripe_with_their_own_keys(
    make_payhook: MakePayhook, stripe_api: Any, stripe_event: Any
) -> None:
    plugin = FetchingPlugin()
    harness = make_payhook(
        {"fetching": plugin},
        tenants={
            "pycon": {"plugins": ["fetching"], "stripe_api_key": "rk_test_pycon_key"},
            "djangocon": {
                "plugins": ["fetching"],
                "stripe_api_key": "rk_test_django_key",
                "stripe_account": "acct_1Connected",
            },
        },
    )
    route = stripe_api.get(url__regex=r"/v1/payment_intents/pi_\w+").mock(
        side_effect=lambda request: httpx.Response(200, json=intent(request.url.path.rsplit("/", 1)[1]))
    )
    pycon_event = stripe_event(PI_SUCCEEDED, data__object__id="pi_pycon1")
    django_event = stripe_event(PI_SUCCEEDED, data__object__id="pi_django1")
    [pycon_run] = harness.send(pycon_event, tenant="pycon")
    [django_run] = harness.send(django_event, tenant="djangocon")
    assert (pycon_run.status, django_run.status) == ("succeeded", "succeeded")
    assert sorted(plugin.fetched) == [("djangocon", "succeeded"), ("pycon", "succeeded")]
    seen = {call.request.url.path: call.request.headers for call in route.calls}
    assert seen["/v1/payment_intents/pi_pycon1"]["authorization"] == "Bearer rk_test_pycon_key"
    assert "stripe-account" not in seen["/v1/payment_intents/pi_pycon1"]
    assert seen["/v1/payment_intents/pi_django1"]["authorization"] == "Bearer rk_test_django_key"
    assert seen["/v1/payment_intents/pi_django1"]["stripe-account"] == "acct_1Connected"


@store_backends
def test_a_tenant_without_a_key_fails_the_run_naming_the_key(
    make_payhook: MakePayhook, stripe_api: Any, stripe_event: Any
) -> None:
    harness = make_payhook({"fetching": FetchingPlugin()}, tenants={"nokey": {"plugins": ["fetching"]}})
    [run] = harness.send(stripe_event(PI_SUCCEEDED))
    assert run.status == "failed"
    [failure] = harness.failures()
    assert "tenants.nokey.stripe_api_key" in failure.message
    assert not stripe_api.calls


def test_clients_are_built_once_per_tenant_and_honour_the_stripe_settings(stripe_api: Any) -> None:
    import respx

    clients = StripeClients(StripeConfig(api_base="http://127.0.0.1:12111", max_network_retries=0))
    tenant = TenantConfig(slug="a", webhook_secrets=("whsec_a",), stripe_api_key="sk_test_a")
    client = clients.for_tenant(tenant)
    assert clients.for_tenant(tenant) is client
    with respx.mock(base_url="http://127.0.0.1:12111") as local:
        route = local.get("/v1/payment_intents/pi_1").mock(return_value=httpx.Response(500, json={}))
        with pytest.raises(stripe.APIError):
            client.v1.payment_intents.retrieve("pi_1")
        assert route.call_count == 1  # max_network_retries = 0: no retry
    clients.close()
    with pytest.raises(NoStripeKey, match=r"tenants\.b\.stripe_api_key"):
        clients.for_tenant(TenantConfig(slug="b", webhook_secrets=("whsec_b",)))
