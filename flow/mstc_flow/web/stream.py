"""The live feed as server-sent events, and the page fragments the live script refreshes.

`/ui/events` streams the service's notices (`mstc_flow.live`) to a logged-in page: one
`data:` line of JSON per notice, a comment every `KEEPALIVE_SECONDS` so proxies and the
browser keep the connection, and `retry:` so the browser's EventSource reconnects within a
second when the flow restarts. The stream ends when the service stops or the page fell
behind (the browser reconnects; the script then refreshes every fragment, since notices were
missed). The fragments are the same templates the pages include, rendered alone: the
overview's body, a job's live part, the first page of the jobs list's rows (refreshed after a
reconnect), and one row of the list (204 when the job does not belong on the list's
filters, so the script adds only rows the list would show).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from mstc_flow.errors import BadQuery, NotFound
from mstc_flow.web import views
from mstc_flow.web.pages import job_context, overview_context, page_flags

if TYPE_CHECKING:
    from mstc_flow.web.site import Web

__all__ = ["KEEPALIVE_SECONDS", "stream_router"]

KEEPALIVE_SECONDS = 15.0
_RECONNECT_MS = 1000


def stream_router(web: Web, ui: str) -> APIRouter:
    router = APIRouter(prefix=ui, include_in_schema=False)

    @router.get("/events")
    async def events(request: Request) -> Response:
        if web.session(request) is None:
            return PlainTextResponse("Log in first.", status_code=401)
        return StreamingResponse(
            _feed(web), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    @router.get("/parts/overview")
    def overview_part(request: Request) -> Response:
        return web.page(request, "_overview.html", lambda _s: overview_context(web))

    @router.get("/parts/job/{key}")
    def job_part(request: Request, key: str) -> Response:
        return web.page(request, "_job.html", lambda _s: job_context(web, key))

    @router.get("/parts/rows")
    def rows_part(request: Request) -> Response:
        query = dict(request.query_params)

        def build(_session: object) -> dict[str, Any]:
            page = web.ports.list_jobs(views.job_query(query))
            return {"page": page, "flags": page_flags(web, page)}

        return web.page(request, "_rows.html", build)

    @router.get("/parts/row/{key}")
    def row_part(request: Request, key: str) -> Response:
        return _row(web, request, key)

    return router


def _row(web: Web, request: Request, key: str) -> Response:
    session = web.session(request)
    if session is None:
        return PlainTextResponse("Log in first.", status_code=401)
    try:
        query = views.job_query(dict(request.query_params))
        job = web.ports.get_job(key)
    except (BadQuery, NotFound):
        return Response(status_code=204)
    if not views.matches(job, query):
        return Response(status_code=204)
    flags = web.ports.job_flags([job.request_id])
    return web.render("_row.html", session, job=job, flags=flags)


async def _feed(web: Web) -> AsyncIterator[str]:
    listener = web.live.subscribe()
    try:
        yield f"retry: {_RECONNECT_MS}\n\n"
        while True:
            try:
                item = await listener.next(KEEPALIVE_SECONDS)
            except EOFError:
                return
            yield ": keep-alive\n\n" if item is None else f"data: {json.dumps(item)}\n\n"
    finally:
        web.live.unsubscribe(listener)
