"""The flow's HTTP API: `create_app` builds it from the ports, the settings and a registry.

REST/JSON under `/api/v1`, described by OpenAPI at `/api/v1/openapi.json` (no docs UI: it
would fetch scripts from the internet). Every error is JSON `{"error": "<sentence>"}`: the
flow's error classes become 404 (NotFound), 400 (BadQuery, a bad query parameter named),
422 (PipelineRefused, with its task and field apart), 413 (TooLarge), 409 (any other
PermanentError: retrying cannot help) and 503 (TransientError, with
Retry-After); 401/403 come from `auth`; anything else is a bug, 500 without details.
`/healthz`, `/readyz` and `/metrics` are open, as the worker's are, for probes and
Prometheus. This is the only package that imports FastAPI, Starlette or uvicorn (an import
contract says so).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from starlette.exceptions import HTTPException

from mstc_flow.api.auth import AuthFailed, Forbidden, Tokens
from mstc_flow.api.health import health_router
from mstc_flow.api.ports import FlowPorts
from mstc_flow.api.routes_catalog import catalog_router
from mstc_flow.api.routes_jobs import jobs_router
from mstc_flow.api.routes_pipelines import pipelines_router
from mstc_flow.api.routes_queue import queue_router
from mstc_flow.errors import (
    BadQuery,
    NotFound,
    PermanentError,
    PipelineRefused,
    TooLarge,
    TransientError,
)
from mstc_flow.settings import FlowSettings

__all__ = ["API_PREFIX", "create_app", "error_response"]

API_PREFIX = "/api/v1"
# A TransientError's 503 asks the caller to come back after this long.
_RETRY_AFTER_SECONDS = "5"
_UNEXPECTED = "The flow service failed on this request; its log says why."


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def create_app(ports: FlowPorts, settings: FlowSettings, registry: CollectorRegistry) -> FastAPI:
    """The API app; its request counter is registered on `registry` (one app per registry)."""
    app = FastAPI(
        title="mstc-flow",
        summary="History of the worker's Jobs, the trigger catalog, retries and cancels.",
        version="1",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    tokens = Tokens(settings)
    # The prefix goes to the routers themselves, so that each route knows its whole template
    # (the request counter labels by it).
    app.include_router(jobs_router(ports, tokens, API_PREFIX))
    app.include_router(catalog_router(ports, tokens, API_PREFIX))
    app.include_router(queue_router(ports, tokens, API_PREFIX))
    app.include_router(pipelines_router(ports, tokens, API_PREFIX))
    app.include_router(health_router(ports, registry))
    _add_error_handlers(app)
    _count_requests(app, registry)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def sentence(status: int) -> Callable[[Request, Exception], Response]:
        return lambda _request, exc: error_response(status, str(exc))

    app.add_exception_handler(NotFound, sentence(404))
    app.add_exception_handler(BadQuery, sentence(400))
    app.add_exception_handler(PermanentError, sentence(409))
    app.add_exception_handler(TooLarge, sentence(413))
    app.add_exception_handler(PipelineRefused, _refused)
    app.add_exception_handler(
        TransientError,
        lambda _r, exc: error_response(503, str(exc), {"Retry-After": _RETRY_AFTER_SECONDS}),
    )
    app.add_exception_handler(
        AuthFailed,
        lambda _r, exc: error_response(401, str(exc), {"WWW-Authenticate": "Bearer"}),
    )
    app.add_exception_handler(Forbidden, sentence(403))
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    # A bug: the body says no more than that (the traceback goes to the service's log).
    # The server drops the connection after it, so the client is told not to reuse it.
    app.add_exception_handler(
        Exception, lambda _r, _exc: error_response(500, _UNEXPECTED, {"Connection": "close"})
    )


def _refused(_request: Request, exc: Exception) -> Response:
    """422: the refusal's sentence, and where it is (task, field, line) for programs."""
    assert isinstance(exc, PipelineRefused)
    body = {"error": str(exc), "task": exc.task, "field": exc.field, "line": exc.line}
    return JSONResponse(body, status_code=422)


def _invalid_request(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "; ".join(_problem(error) for error in exc.errors()))


def _problem(error: dict[str, Any]) -> str:
    """ "query parameter 'limit': Input should be less than or equal to 500"."""
    loc: Sequence[Any] = error.get("loc", ())
    where = f"{loc[0]} parameter {'.'.join(map(str, loc[1:]))!r}" if len(loc) > 1 else "request"
    return f"{where}: {error.get('msg', 'invalid')}"


def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path 404, wrong method 405) in the API's shape."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), exc.headers)


def _count_requests(app: FastAPI, registry: CollectorRegistry) -> None:
    requests = Counter(
        "mstc_flow_api_requests",
        "HTTP requests answered by the flow's API, by route template, method and status.",
        ["route", "method", "status"],
        registry=registry,
    )

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        status = 500  # an exception escaping the handlers is answered 500 outside
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            # The route template, not the path: one series per route, whatever the key.
            route = getattr(request.scope.get("route"), "path", "unmatched")
            requests.labels(route, request.method, str(status)).inc()
