"""Store the events Stripe created that payhook never received (`payhook reconcile`).

A delivery can be missed for good: the endpoint was down longer than Stripe retries, or it
was disabled. Stripe's List Events API still has the events (for 30 days), so each tenant's
are listed with its own key, and every one not stored yet is stored exactly as a delivery
would be: through the ingest write, with its handler runs, marked `source = "reconcile"`.
Events already stored are left alone (their runs are not re-armed, as a redelivery would).

The API is not trusted to be well behaved: a page that makes no progress ends the tenant's
listing, each call ends within `[stripe] timeout` (stripe_http.py), an event over
`[ingest] max_body_bytes` is refused as a delivery would be, and one of another Connect
account than the tenant's gets no runs, as one of the wrong livemode does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from payhook.config import Config, IngestConfig, TenantConfig
from payhook.plugins.host import PluginHost
from payhook.receive.envelope import MAX_ID_LENGTH, BadEvent, parse_event, to_delivery
from payhook.receive.guards import check as check_guards
from payhook.store.engine import Store, StoreUnavailable
from payhook.store.eventlog import Delivery, EventLog
from payhook.store.runs import EVENT, runs_of
from payhook.stripe_api.clients import NoStripeKey, StripeClients

__all__ = ["PAGE_SIZE", "RECONCILE_SOURCE", "TenantReconcile", "reconcile", "reconcile_tenant", "split_list"]

PAGE_SIZE = 100  # the most the List Events API gives per page
# Rate-limited pages are retried here: the SDK retries a 429 only when Stripe adds
# `Stripe-Should-Retry: true`, and never reads Retry-After.
RATE_LIMIT_DELAY = 1.0
MAX_RETRY_AFTER = 60.0
RECONCILE_SOURCE = "reconcile"
# The reasons a report keeps, per kind of problem; its counts still count every one.
MAX_PROBLEMS = 10

Progress = Callable[["TenantReconcile"], None]


@dataclass
class TenantReconcile:
    """What reconciling one tenant did; `error` says which page failed, and why."""

    tenant: str
    listed: int = 0
    new: int = 0
    known: int = 0
    # Listed events that are not an event payhook can store (see envelope.parse_event).
    failed: int = 0
    # Listed events not stored because they exceed `[ingest] max_body_bytes`.
    refused: int = 0
    pages: int = 0
    error: str | None = None
    # Why events failed or were refused, one line each (the first MAX_PROBLEMS of each).
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0 and self.refused == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "listed": self.listed,
            "new": self.new,
            "known": self.known,
            "failed": self.failed,
            "refused": self.refused,
            "pages": self.pages,
            "error": self.error,
            "problems": self.problems,
        }

    def note(self, count: int, problem: str) -> None:
        """Keep `problem`, the `count`th of its kind, unless MAX_PROBLEMS of them are kept."""
        if count <= MAX_PROBLEMS:
            self.problems.append(problem)


def reconcile(
    config: Config,
    store: Store,
    host: PluginHost,
    clients: StripeClients,
    *,
    since: datetime,
    tenants: Iterable[str] | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] | None = None,
) -> list[TenantReconcile]:
    """Reconcile `tenants` (default: every active one) back to `since`; one report each.

    A tenant that fails (no key, an API error the SDK's retries did not cure, the store)
    is reported and the next one goes on.
    """
    slugs = list(tenants) if tenants is not None else [t.slug for t in config.tenants.values() if t.active]
    log = EventLog(store, runs_of(store))
    reports = []
    for slug in slugs:
        report = reconcile_tenant(
            config.tenants[slug],
            store,
            log,
            host,
            clients,
            since=since,
            sleep=sleep,
            max_event_bytes=config.ingest.max_body_bytes,
        )
        if progress is not None:
            progress(report)
        reports.append(report)
    return reports


def reconcile_tenant(
    tenant: TenantConfig,
    store: Store,
    log: EventLog,
    host: PluginHost,
    clients: StripeClients,
    *,
    since: datetime,
    sleep: Callable[[float], None] | None = None,
    max_event_bytes: int = IngestConfig.max_body_bytes,
) -> TenantReconcile:
    """List the tenant's events created at or after `since`, page by page, storing new ones.

    Each page is stored before the next is asked for, so a failure half way keeps what was
    done and says which page it stopped at; running again picks up the rest. A page that
    says there is more but ends on an event an earlier page already ended on would be asked
    for again and again: the listing stops there, as a failure.
    """
    import stripe

    report = TenantReconcile(tenant.slug)
    try:
        client = clients.for_tenant(tenant)
    except NoStripeKey as exc:
        report.error = str(exc)
        return report
    params: dict[str, Any] = {"created": {"gte": int(since.timestamp())}, "limit": PAGE_SIZE}
    # The last event of each page so far, and which page it ended: the cursors asked with.
    cursors: dict[str, int] = {}
    while True:
        page = report.pages + 1
        try:
            body = _list_page(client, params, clients.settings.max_network_retries, sleep or time.sleep)
            items, has_more = split_list(body)
        except stripe.StripeError as exc:
            report.error = f"page {page}: {_describe(exc)}"
            return report
        except ValueError as exc:
            report.error = f"page {page}: the API's answer is not a list of events ({exc})"
            return report
        last = _event_id(items[-1]) if items else None
        if has_more and last in cursors:
            report.error = (
                f"page {page}: no progress: it ends on {last}, as page {cursors[last]} did, and "
                "says there is more; stopped rather than ask for the same page again"
            )
            return report
        report.pages = page
        try:
            _store_page(report, tenant, items, store, log, host, max_event_bytes)
        except StoreUnavailable as exc:
            report.error = f"page {page}: could not store its events ({exc})"
            return report
        if not has_more or not items:
            return report
        if last is None:
            report.error = f"page {page}: its last event has no id to continue from"
            return report
        cursors[last] = page
        params["starting_after"] = last


def _list_page(client: Any, params: dict[str, Any], retries: int, sleep: Callable[[float], None]) -> str:
    """One page's body; a 429 is tried again up to `retries` times, after its Retry-After."""
    import stripe

    for attempt in range(retries + 1):
        try:
            return str(client.raw_request("get", "/v1/events", **params).body)
        except stripe.RateLimitError as exc:
            if attempt == retries:
                raise
            sleep(_retry_after(exc.headers, RATE_LIMIT_DELAY * 2**attempt))
    raise AssertionError("unreachable")


def _retry_after(headers: Any, default: float) -> float:
    """Seconds the API asked to wait (capped), or `default` when it did not say."""
    value = None
    for name, given in dict(headers or {}).items():
        if name.lower() == "retry-after":
            value = given
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        seconds = default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _store_page(
    report: TenantReconcile,
    tenant: TenantConfig,
    items: Sequence[str],
    store: Store,
    log: EventLog,
    host: PluginHost,
    max_event_bytes: int,
) -> None:
    report.listed += len(items)
    deliveries = []
    for index, text in enumerate(items):
        where = f"page {report.pages}, event {index + 1}"
        body = text.encode("utf-8")
        if len(body) > max_event_bytes:
            # The bound a delivery of it would get (413): the store takes no bigger event.
            report.refused += 1
            event_id = _event_id(text)
            name = event_id if event_id is not None and len(event_id) <= MAX_ID_LENGTH else where
            report.note(
                report.refused,
                f"{name}: {len(body)} bytes, over [ingest] max_body_bytes ({max_event_bytes}); not stored",
            )
            continue
        try:
            event, payload = parse_event(body)
        except BadEvent as exc:
            report.failed += 1
            report.note(report.failed, f"{where}: {exc.detail}")
            continue
        handlers = host.handlers_for(event["type"], tenant)
        # secret_index 0: no signature was checked; the API answered over TLS with the key.
        delivery = to_delivery(tenant.slug, event, payload, 0, handlers)
        delivery = check_guards(tenant, replace(delivery, source=RECONCILE_SOURCE))
        deliveries.append(_check_account(tenant, delivery))
    known = _stored_ids(store, tenant.slug, [d.stripe_event_id for d in deliveries])
    fresh: dict[str, Delivery] = {}
    for delivery in deliveries:
        if delivery.stripe_event_id in known or delivery.stripe_event_id in fresh:
            report.known += 1
        else:
            fresh[delivery.stripe_event_id] = delivery
    if not fresh:
        return
    for result in log.append(list(fresh.values())):
        # "duplicate": delivered by Stripe between the look-up and this write.
        if result.status == "duplicate":
            report.known += 1
        else:
            report.new += 1


def _check_account(tenant: TenantConfig, delivery: Delivery) -> Delivery:
    """As guards.check does for livemode: an event of another Connect account than the
    tenant's `stripe_account` (or of any account, when the tenant has none) is stored, so
    an operator can see it, but gets no runs, with the reason kept. An event that names no
    account is taken as the tenant's own: it was listed with the tenant's key and account.
    """
    if delivery.account is None or delivery.account == tenant.stripe_account:
        return delivery
    wanted = repr(tenant.stripe_account) if tenant.stripe_account else "not set"
    reason = f"an event of account {delivery.account}; tenants.{tenant.slug}.stripe_account is {wanted}"
    if delivery.ignored_reason is not None:
        reason = f"{delivery.ignored_reason}; {reason}"
    return replace(delivery, handlers=(), ignored_reason=reason)


def _stored_ids(store: Store, tenant: str, event_ids: list[str]) -> set[str]:
    """Which of `event_ids` the tenant already has: those are not appended at all, because
    appending a stored event re-arms its dead runs, as a redelivery does."""
    if not event_ids:
        return set()
    query = select(EVENT.c.stripe_event_id).where(
        EVENT.c.tenant == tenant, EVENT.c.stripe_event_id.in_(event_ids)
    )
    with store.engine.connect() as conn:
        return {row[0] for row in conn.execute(query)}


def _event_id(text: str) -> str | None:
    try:
        value = json.loads(text).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _describe(exc: Exception) -> str:
    """An API error in one line: its HTTP status and Stripe's message, never the key."""
    status = getattr(exc, "http_status", None)
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    # AuthenticationError quotes the key it was given, partly masked; keep none of it.
    message = re.sub(r"\b(sk|rk)_\w+", "<key>", message)
    prefix = f"HTTP {status}: " if status else ""
    return f"{type(exc).__name__}: {prefix}{message.strip()}"


_SPACE = re.compile(r"[ \t\n\r]*")


def split_list(body: str) -> tuple[list[str], bool]:
    """A list answer's `data` items as the exact texts the API sent, and its `has_more`.

    The stored payload of a reconciled event is its text as the API returned it, not a
    re-serialisation, so the body is walked with the JSON decoder rather than parsed whole.
    Raises ValueError when the body is not a JSON object with a `data` array.
    """
    decoder = json.JSONDecoder()
    items: list[str] = []
    has_more = False
    seen_data = False
    try:
        pos = _expect(body, _skip(body, 0), "{")
        if body[pos] != "}":
            while True:
                key, pos = decoder.raw_decode(body, pos)
                pos = _expect(body, _skip(body, pos), ":")
                if key == "data":
                    seen_data = True
                    pos = _items(body, _expect(body, pos, "["), decoder, items)
                else:
                    value, pos = decoder.raw_decode(body, pos)
                    if key == "has_more":
                        has_more = value is True
                pos = _skip(body, pos)
                if body[pos] != ",":
                    break
                pos = _skip(body, pos + 1)
        _expect(body, pos, "}")
    except (IndexError, RecursionError):
        raise ValueError("the body ends too soon or nests too deep") from None
    if not seen_data:
        raise ValueError('no "data" array')
    return items, has_more


def _items(body: str, pos: int, decoder: json.JSONDecoder, items: list[str]) -> int:
    """Collect the array's elements from `pos` (just past its "["); returns the position
    just past its "]"."""
    if body[pos] == "]":
        return pos + 1
    while True:
        start = pos
        _, pos = decoder.raw_decode(body, pos)
        items.append(body[start:pos])
        pos = _skip(body, pos)
        if body[pos] != ",":
            return _expect(body, pos, "]")
        pos = _skip(body, pos + 1)


def _skip(body: str, pos: int) -> int:
    match = _SPACE.match(body, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _expect(body: str, pos: int, char: str) -> int:
    """The position after `char` at `pos` and any space that follows it."""
    if body[pos] != char:
        raise ValueError(f"expected {char!r} at offset {pos}")
    return _skip(body, pos + 1)
