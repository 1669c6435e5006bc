"""Routing: the tenant route, and JSON answers for requests no route takes.

Starlette answers a path no route matches, a wrong method and a crash with plain-text
pages; every error of payhook's contract is JSON `{"error": ..., "detail": ...}`, so these
handlers answer instead. Their details never echo the path.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from payhook.config import RESERVED_SLUGS
from payhook.receive.ingest import error

__all__ = ["JSON_ERROR_HANDLERS", "TenantRoute", "server_error"]


class TenantRoute(Route):
    """`/{tenant}`, except for reserved names: `POST /healthz` is a wrong method (405),
    not a delivery to an unknown tenant."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and child["path_params"].get("tenant") in RESERVED_SLUGS:
            return Match.NONE, {}
        return match, child


async def http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        detail = "no such path; deliveries go to POST /<tenant>, without a trailing slash"
        return error(404, "not_found", detail)
    if status == 405:
        # Starlette puts the route's methods in Allow; the answer must keep it (RFC 9110).
        allowed = (exc.headers or {}).get("Allow", "")
        return error(405, "method_not_allowed", f"this path answers {allowed}", exc.headers)
    try:
        code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        code = "error"
    return error(status, code, str(exc.detail), exc.headers)


async def server_error(_request: Request, _exc: Exception) -> Response:
    # The traceback goes to the log (Starlette re-raises after answering), not to the client.
    return error(500, "internal_error", "payhook failed on this request; its log has the details")


JSON_ERROR_HANDLERS: dict[Any, Callable[[Request, Exception], Coroutine[Any, Any, Response]]] = {
    HTTPException: http_exception,
    Exception: server_error,
}
