"""The dashboard's reading pages: overview, jobs list, job page, catalog (all GET, all HTML).

Each page is rendered whole on the server, so it reads the same with JavaScript off; the
live script only refreshes the fragments `stream` serves from the same `*_context` builders
below. Handlers are plain functions: FastAPI runs them in its thread pool, since the ports
block on the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mstc_flow.errors import NotFound
from mstc_flow.web import views

if TYPE_CHECKING:
    from mstc_flow.web.site import Web

__all__ = ["job_context", "overview_context", "page_flags", "pages_router"]

_THROUGHPUT_MINUTES = 60


def overview_context(web: Web) -> dict[str, Any]:
    """Counts by state (all, last hour, last day), throughput, replicas, flags."""
    ports, now = web.ports, datetime.now(UTC)
    counts = {
        "now": ports.state_counts(None),
        "hour": ports.state_counts(now - timedelta(hours=1)),
        "day": ports.state_counts(now - timedelta(days=1)),
    }
    per_minute = list(ports.finished_per_minute(now, _THROUGHPUT_MINUTES))
    return {
        "states": views.STATES, "counts": counts, "per_minute": per_minute,
        "peak": max(per_minute, default=0), "finished_hour": sum(per_minute),
        "replicas": ports.replicas(), "flags": ports.flags(),
    }  # fmt: skip


def job_context(web: Web, key: str) -> dict[str, Any]:
    """The job, its open flags, firing, events, outputs and log (None when none is stored)."""
    ports = web.ports
    job = ports.get_job(key)
    try:
        log: str | None = ports.read_log(job).decode("utf-8", errors="replace")
    except NotFound:
        log = None
    return {
        "job": job, "firing": ports.job_firing(job.request_id),
        "flags": ports.job_flags([job.request_id]),
        "events": ports.job_events(job.request_id), "outputs": ports.outputs(job), "log": log,
    }  # fmt: skip


def page_flags(web: Web, page: Any) -> Mapping[str, Any]:
    """The open flags of the jobs on `page`, by request id (one query for the page)."""
    return web.ports.job_flags([job.request_id for job in page.items])


def pages_router(web: Web, ui: str) -> APIRouter:
    router = APIRouter(prefix=ui, include_in_schema=False)

    @router.get("/")
    def overview(request: Request) -> Response:
        return web.page(request, "overview.html", lambda _s: overview_context(web))

    @router.get("/jobs")
    def jobs(request: Request) -> Response:
        form = dict(request.query_params)

        def build(_session: object) -> dict[str, Any]:
            query = views.job_query(form, form.get("cursor"))
            page = web.ports.list_jobs(query)
            filters = {name: form.get(name, "") for name in views.FILTERS}
            return {"page": page, "filters": filters, "states": views.STATES,
                    "flags": page_flags(web, page),
                    "first_page": query.cursor is None,
                    "filter_query": urlencode({k: v for k, v in filters.items() if v})}  # fmt: skip

        return web.page(request, "jobs.html", build)

    @router.get("/jobs/{key}")
    def job(request: Request, key: str) -> Response:
        notice = request.query_params.get("notice")
        return web.page(request, "job.html", lambda _s: {**job_context(web, key), "notice": notice})

    @router.get("/catalog")
    def catalog(request: Request) -> Response:
        return web.page(request, "catalog.html", lambda _s: catalog_context(web))

    return router


def catalog_context(web: Web) -> dict[str, Any]:
    """The catalog with each entry's newest firing, and the parked firings."""
    catalog = web.ports.catalog()
    names = [entry["name"] for entry in catalog.get("entries", ())]
    return {"catalog": catalog, "last": web.ports.last_firings(names),
            "parked": web.ports.parked()}  # fmt: skip
