"""One Stripe API client per tenant, built when first asked for.

Each client carries its tenant's key (and Connect account) and the `[stripe]` settings, on
an httpx transport: the one transport tests can mock (respx) for sync and async calls alike.
Each request ends within `[stripe] timeout` in total, however slowly the answer comes
(see `payhook.stripe_api.http`).
The SDK is imported on first use, so a runtime whose handlers never call Stripe pays nothing.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from payhook.config import StripeConfig, TenantConfig
from payhook.stripe_api.fetch import Coalescer, RateLimiter

if TYPE_CHECKING:
    import stripe

__all__ = ["NoStripeKey", "StripeClients"]


class NoStripeKey(LookupError):
    """The tenant has no `stripe_api_key`, so there is no client to give."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__(
            f"tenant {tenant!r} has no Stripe API key; set tenants.{tenant}.stripe_api_key "
            '(a string or { "$env" = "NAME" }) to call Stripe for it'
        )


class StripeClients:
    """The registry of per-tenant clients of one runtime (or one command)."""

    def __init__(self, settings: StripeConfig) -> None:
        self.settings = settings
        self._clients: dict[str, stripe.StripeClient] = {}
        self._transports: list[Any] = []
        self._limiters: dict[str, RateLimiter] = {}
        self._coalescer = Coalescer()
        # Handlers run on several worker threads; two asking at once must share one client.
        self._lock = threading.Lock()

    def for_tenant(self, tenant: TenantConfig) -> stripe.StripeClient:
        """The tenant's client; NoStripeKey when its config has no API key."""
        client = self._clients.get(tenant.slug)
        if client is not None:
            return client
        if tenant.stripe_api_key is None:
            raise NoStripeKey(tenant.slug)
        with self._lock:
            client = self._clients.get(tenant.slug)
            if client is None:
                client = self._clients[tenant.slug] = self._build(tenant, tenant.stripe_api_key)
        return client

    def retrieve(self, tenant: TenantConfig, url: str) -> stripe.StripeObject:
        """GET `url` (an object's API path) with the tenant's client: identical requests
        in flight are made once, and calls are held to `[stripe] rate_limit` per second.

        The answer is the SDK's object for it (a `stripe.PaymentIntent`, say), shared by the
        callers that waited for it."""

        def call() -> stripe.StripeObject:
            client = self.for_tenant(tenant)
            self._limiter(tenant.slug).acquire()
            return client.deserialize(client.raw_request("get", url), api_mode="V1")

        return self._coalescer.call((tenant.slug, url), call)

    def _limiter(self, slug: str) -> RateLimiter:
        limiter = self._limiters.get(slug)
        if limiter is None:
            with self._lock:
                limiter = self._limiters.setdefault(slug, RateLimiter(self.settings.rate_limit))
        return limiter

    def _build(self, tenant: TenantConfig, api_key: str) -> stripe.StripeClient:
        import stripe

        from payhook.stripe_api.http import DeadlineHTTPXClient

        transport = DeadlineHTTPXClient(self.settings.timeout)
        self._transports.append(transport)
        return stripe.StripeClient(
            api_key,
            stripe_account=tenant.stripe_account,
            # An address given as None would replace the SDK's own: leave it out instead.
            base_addresses={"api": self.settings.api_base} if self.settings.api_base else {},
            max_network_retries=self.settings.max_network_retries,
            http_client=transport,
        )

    def close(self) -> None:
        """Close every client's connections; a later `for_tenant` builds a new client."""
        with self._lock:
            transports, self._transports = self._transports, []
            self._clients.clear()
        for transport in transports:
            transport.close()
