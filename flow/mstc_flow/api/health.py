"""The open endpoints: `/healthz` (the process answers), `/readyz` (the service can work:
`ports.ready()`), `/metrics` (Prometheus text from the registry the service gave).

No token: probes and Prometheus scrape them, as they do the worker's, and they tell nothing
about jobs. A failing readiness check is 503 with the reason, never a crash of the probe.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mstc_flow.api.ports import FlowPorts
from mstc_flow.errors import FlowError

__all__ = ["health_router"]

_log = logging.getLogger(__name__)


def health_router(ports: FlowPorts, registry: CollectorRegistry) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/readyz",
        summary="The service can serve (store and broker reachable)",
        responses={503: {"description": "Not ready; the body says why"}},
    )
    def readyz() -> Response:
        try:
            ready = ports.ready()
        except FlowError as exc:
            _log.warning("readiness check failed: %s", exc)
            return JSONResponse({"error": f"not ready: {exc}"}, status_code=503)
        if not ready:
            return JSONResponse({"error": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
