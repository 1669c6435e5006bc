"""The operator app's endpoints: pages, the replay action, login and logout, and metrics.

Every endpoint but the login form itself is wrapped in `guarded`: without the token (a
bearer header or a session cookie) it answers 401, a page with the login form for people.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from payhook.config import Config
from payhook.operator.auth import SESSION_COOKIE, SESSION_SECONDS, Auth, Visitor, bearer_token
from payhook.operator.chart import hourly_chart
from payhook.operator.throttle import LoginThrottle, client_key
from payhook.ops.event_reports import (
    EVENT_STATUSES,
    EventFilter,
    RunState,
    find_events,
    list_events,
    run_state,
)
from payhook.ops.failure_reports import problem_runs
from payhook.ops.health_reports import activity, tenant_health
from payhook.ops.replay import ReplaySelection, replay
from payhook.store.engine import Store, StoreUnavailable
from payhook.store.models import utcnow

__all__ = [
    "OperatorState",
    "event_page",
    "event_path",
    "events_page",
    "login",
    "logout",
    "metrics",
    "overview",
    "replay_run",
    "store_unavailable",
]

log = logging.getLogger("payhook.operator")

# Forms are a token, a run id and a CSRF token: anything bigger is not ours.
MAX_FORM_BYTES = 16 * 1024
RECENT_PER_TENANT = 10
# After a replay, how long to wait for this process's worker to run it, so that the notice can
# say how it went rather than that it will run (the worker elsewhere: not waited for).
REPLAY_OUTCOME_WAIT = 2.0
REPLAY_OUTCOME_POLL = 0.05


@dataclass
class OperatorState:
    config: Config
    store: Store
    auth: Auth
    templates: Jinja2Templates
    registry: CollectorRegistry
    # Called after a replay, to wake an in-process worker at once (None: it polls); True
    # when there was one to wake.
    wake_worker: Callable[[], bool] | None = None
    # Wrong tokens per client, at the login form or as bearer tokens.
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)


Page = Callable[[Request], Awaitable[Response]]
Guarded = Callable[[Request, Visitor], Awaitable[Response]]


def _state(request: Request) -> OperatorState:
    state: OperatorState = request.app.state.operator
    return state


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    state = _state(request)
    response: HTMLResponse = state.templates.TemplateResponse(
        request,
        template,
        {"nonce": request.scope.get("payhook_csp_nonce", ""), **context},
        status_code=status_code,
    )
    return response


def guarded(endpoint: Guarded) -> Page:
    """401 unless the request carries the token; for POSTs from a session, a CSRF token too.

    A wrong bearer token counts against the client as a wrong token at the login form does:
    either way is a guess at the same token.
    """

    @functools.wraps(endpoint)
    async def checked(request: Request) -> Response:
        state = _state(request)
        guessing = bearer_token(request) is not None
        client = client_key(request.client.host if request.client else None)
        if guessing and (wait := state.login_throttle.retry_after(client)) is not None:
            return too_many_tries(request, wait)
        visitor = await state.auth.identify(request)
        if visitor is None:
            if guessing:
                state.login_throttle.failed(client)
                log.warning("operator request refused: wrong bearer token from %s", client)
            return unauthorized(request)
        if guessing and visitor.via == "bearer":
            state.login_throttle.succeeded(client)
        return await endpoint(request, visitor)

    return checked


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """503 for any page or action the database did not answer (a session check included)."""
    reason = exc.reason if isinstance(exc, StoreUnavailable) else "unavailable"
    log.warning("operator %s %s: the store is unavailable (%s)", request.method, request.url.path, reason)
    return PlainTextResponse("503: the database is unavailable; try again shortly\n", status_code=503)


def unauthorized(request: Request, message: str | None = None) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="payhook operator"'}
    if request.url.path.endswith("/metrics") or "text/html" not in request.headers.get("accept", ""):
        return PlainTextResponse("401: the operator token is required\n", status_code=401, headers=headers)
    response = render(request, "login.html", status_code=401, message=message)
    response.headers.update(headers)
    return response


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each); {} when it is not one."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def local_path(request: Request, candidate: str | None, fallback: str) -> str:
    """`candidate` if it is a path of this app (never another site), else `fallback`'s path."""
    root = request.url_for(fallback).path
    if candidate and candidate.startswith("/") and not candidate.startswith("//") and "\\" not in candidate:
        return candidate
    return root


def event_path(request: Request, tenant: str, event_id: str) -> str:
    """The path of an event's page, for a link: the id percent-encoded whole.

    An id is whatever string the signed body or Stripe's API held: a `/`, `?`, `#` or `%` in
    it must stay part of the id, so nothing is left unencoded. Browsers resolve a `.` or
    `..` path segment away, encoded or not, so those two ids go in the query instead.
    """
    where = quote(tenant, safe="")
    if event_id in (".", ".."):
        page = request.url_for("event", tenant=where, event_id="").path
        return f"{page}?{urlencode({'id': event_id})}"
    return request.url_for("event", tenant=where, event_id=quote(event_id, safe="")).path


# -- pages -----------------------------------------------------------------------------


@guarded
async def overview(request: Request, visitor: Visitor) -> Response:
    state = _state(request)
    now = utcnow()

    def read() -> dict[str, Any]:
        return {
            "health": tenant_health(state.store, state.config, now),
            "chart": hourly_chart(activity(state.store, now)),
            "problems": problem_runs(state.store),
            "recent": {
                slug: list_events(state.store, EventFilter(tenant=slug, limit=RECENT_PER_TENANT))
                for slug in sorted(state.config.tenants)
            },
        }

    data = await run_in_threadpool(read)
    return render(
        request,
        "overview.html",
        visitor=visitor,
        now=now,
        replayed=request.query_params.get("replayed"),
        replayed_run=await _replayed_run(request),
        **data,
    )


@guarded
async def events_page(request: Request, visitor: Visitor) -> Response:
    state = _state(request)
    params = request.query_params
    status = params.get("status") or None
    tenant = params.get("tenant") or None
    selection = EventFilter(
        tenant=tenant if tenant in state.config.tenants else None,
        type=params.get("type") or None,
        status=status if status in EVENT_STATUSES else None,
        limit=100,
    )
    found = await run_in_threadpool(list_events, state.store, selection)
    return render(
        request,
        "events.html",
        visitor=visitor,
        events=found,
        selection=selection,
        tenants=sorted(state.config.tenants),
        statuses=EVENT_STATUSES,
    )


@guarded
async def event_page(request: Request, visitor: Visitor) -> Response:
    state = _state(request)
    tenant = request.path_params["tenant"]
    # The path holds the id (a `/` in it included); only "." and ".." come in the query.
    event_id = request.path_params["event_id"] or request.query_params.get("id", "")
    found = await run_in_threadpool(find_events, state.store, event_id, tenant)
    if not found:
        return render(
            request, "missing.html", status_code=404, visitor=visitor, event_id=event_id, tenant=tenant
        )
    return render(
        request,
        "event.html",
        visitor=visitor,
        event=found[0],
        replayed=request.query_params.get("replayed"),
        replayed_run=await _replayed_run(request),
    )


async def _replayed_run(request: Request) -> RunState | None:
    """The run a replay just re-armed (`?run=`), as it stands now, for the notice."""
    run = request.query_params.get("run", "")
    if not (run.isascii() and run.isdigit()) or len(run) > 18:
        return None
    return await run_in_threadpool(run_state, _state(request).store, int(run))


# -- actions ---------------------------------------------------------------------------


@guarded
async def replay_run(request: Request, visitor: Visitor) -> Response:
    """Re-arm one failed or dead run (the replay button)."""
    state = _state(request)
    form = await read_form(request)
    if not state.auth.csrf_ok(visitor, form.get("csrf")):
        return PlainTextResponse("403: the form is stale; reload the page and try again\n", status_code=403)
    run = form.get("run", "")
    if not run.isdigit():
        return PlainTextResponse("400: which run? (a run id is required)\n", status_code=400)
    who = "operator:web" if visitor.via == "session" else "operator:api"
    result = await run_in_threadpool(
        functools.partial(replay, state.store, ReplaySelection(run_id=int(run)), requested_by=who)
    )
    if result.rearmed and state.wake_worker is not None and state.wake_worker():
        await _wait_for_outcome(state.store, int(run))
    log.info("run %s replayed by %s: %d re-armed", run, who, result.rearmed)
    back = local_path(request, form.get("back"), "overview")
    separator = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{separator}replayed={result.rearmed}&run={run}", status_code=303)


async def _wait_for_outcome(store: Store, run_id: int) -> None:
    """Give this process's worker a moment to run the replayed run (bounded)."""
    deadline = asyncio.get_running_loop().time() + REPLAY_OUTCOME_WAIT
    while asyncio.get_running_loop().time() < deadline:
        state = await run_in_threadpool(run_state, store, run_id)
        if state is None or state.settled:
            return
        await asyncio.sleep(REPLAY_OUTCOME_POLL)


async def login(request: Request) -> Response:
    """GET: the form. POST: check the token, start a session, go to the overview."""
    state = _state(request)
    if request.method == "GET":
        if await state.auth.identify(request) is not None:
            return RedirectResponse(request.url_for("overview").path, status_code=303)
        return render(request, "login.html", message=None)
    client = client_key(request.client.host if request.client else None)
    wait = state.login_throttle.retry_after(client)
    if wait is not None:
        # Before the form is read: a throttled client learns nothing, the right token neither.
        # Not logged here (the access log has each 429): a guesser cannot flood the log.
        return too_many_tries(request, wait)
    form = await read_form(request)
    if not state.auth.token_matches(form.get("token", "")):
        state.login_throttle.failed(client)
        log.warning("operator login refused: wrong token from %s", client)
        return render(request, "login.html", status_code=401, message="That is not the operator token.")
    state.login_throttle.succeeded(client)
    response = RedirectResponse(request.url_for("overview").path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        await run_in_threadpool(state.auth.new_session),
        max_age=SESSION_SECONDS,
        path=_cookie_path(request),
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


def too_many_tries(request: Request, wait: int) -> Response:
    headers = {"Retry-After": str(wait)}
    message = f"Too many wrong tokens from your address: try again in {wait} seconds."
    if "text/html" not in request.headers.get("accept", ""):
        return PlainTextResponse(f"429: {message}\n", status_code=429, headers=headers)
    response = render(request, "login.html", status_code=429, message=message)
    response.headers.update(headers)
    return response


@guarded
async def logout(request: Request, visitor: Visitor) -> Response:
    auth = _state(request).auth
    form = await read_form(request)
    if not auth.csrf_ok(visitor, form.get("csrf")):
        return PlainTextResponse("403: the form is stale; reload the page and try again\n", status_code=403)
    # On the server, not only in this browser: a copy of the cookie is refused from now on.
    await run_in_threadpool(auth.end_session, visitor)
    response = RedirectResponse(request.url_for("login").path, status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path=_cookie_path(request), secure=True, httponly=True, samesite="strict"
    )
    return response


def _cookie_path(request: Request) -> str:
    # The app's own root, so a host that mounts it under a prefix keeps the cookie there.
    return request.url_for("overview").path


@guarded
async def metrics(request: Request, _visitor: Visitor) -> Response:
    registry = _state(request).registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
