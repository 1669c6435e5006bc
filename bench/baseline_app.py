"""The baseline: a bare Starlette app that only verifies the signature, on payhook's stack.

Served exactly as `payhook serve` serves (one uvicorn process, loop "auto", the HTTP
parser and connection limits of `payhook serve --http`, no access log), it measures what
this noisy machine does for the HTTP + HMAC floor in the same run, so payhook's numbers can
be read as a ratio of it.
"""

from __future__ import annotations

import argparse

import uvicorn
from payhook.config import Config, load_config
from payhook.receive.verification import SignatureError, verify_signature
from payhook.server.serving import DEFAULT_HTTP, HTTP_PARSERS, uvicorn_options
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def create_baseline(config: Config) -> Starlette:
    async def receive(request: Request) -> Response:
        tenant = config.tenants.get(request.path_params["tenant"])
        if tenant is None:
            return JSONResponse({"error": "unknown_tenant"}, status_code=404)
        body = await request.body()
        try:
            verify_signature(body, request.headers.get("stripe-signature"), tenant.webhook_secrets)
        except SignatureError as exc:
            return JSONResponse({"error": exc.code}, status_code=400)
        return JSONResponse({"status": "verified"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/healthz", healthz, methods=["GET"]), Route("/{tenant}", receive, methods=["POST"])]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http", choices=HTTP_PARSERS, default=DEFAULT_HTTP)
    args = parser.parse_args()
    app = create_baseline(load_config(args.config))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="auto",
        **uvicorn_options(args.http, head_timeout=10.0, limit_concurrency=None),
    )


if __name__ == "__main__":
    main()
