"""The dashboard's pipeline pages: the list, one pipeline (graph, counts, tasks), its writes.

`/ui/pipelines` lists pipelines (recent first, a state filter in a GET form);
`/ui/pipelines/{id}` shows one: its task graph as inline SVG laid out by `graph`, the counts
by task state and the tasks table (each task's Job linked to its job page). The live part
(`/ui/parts/pipeline/{id}`) is the same fragment alone, which the live script refetches on a
pipeline notice or a pipeline task's job event. "Retry failed" and "Cancel" are POST forms
that need an admin session and its CSRF token, like the job page's; anything less is 403
and the port is not called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mstc_flow.errors import BadQuery, FlowError
from mstc_flow.web.actions import admin_form
from mstc_flow.web.graph import MAX_DRAWN, layout

if TYPE_CHECKING:
    from mstc_flow.web.site import Web

__all__ = ["PIPELINE_STATES", "TASK_STATES", "pipeline_context", "pipelines_router"]

PIPELINE_STATES = ("running", "succeeded", "failed", "cancelled")
TASK_STATES = ("waiting", "queued", "running", "succeeded", "failed", "skipped", "cancelled")
_LIST_LIMIT = 100


def pipeline_context(web: Web, pipeline_id: str) -> dict[str, Any]:
    """The pipeline as the desk answers it (tasks with their needs) and its graph (None when
    it has too many tasks to draw)."""
    pipeline = web.ports.get_pipeline(pipeline_id)
    tasks = pipeline.get("tasks") or []
    return {"pipeline": pipeline, "tasks": tasks, "graph": layout(tasks),
            "max_drawn": MAX_DRAWN, "task_states": TASK_STATES}  # fmt: skip


def _list_context(web: Web, state: str) -> dict[str, Any]:
    if state and state not in PIPELINE_STATES:
        raise BadQuery(f"state: one of {', '.join(PIPELINE_STATES)}, not {state[:40]!r}")
    return {"pipelines": web.ports.list_pipelines(state or None, _LIST_LIMIT), "state": state,
            "states": PIPELINE_STATES, "task_states": TASK_STATES}  # fmt: skip


async def _write(web: Web, ui: str, request: Request, pipeline_id: str, action: str) -> Response:
    """Retry the failed tasks of, or cancel, a pipeline for an admin session with its CSRF."""
    session = await admin_form(web, request, "retry or cancel pipelines")
    if isinstance(session, Response):
        return session
    try:
        if action == "retry":
            answer = await run_in_threadpool(web.ports.retry_pipeline, pipeline_id, None)
            retried = answer.get("retried") or []
            notice = f"Retrying {len(retried)} task(s): {', '.join(retried)}."
        else:
            answer = await run_in_threadpool(web.ports.cancel_pipeline, pipeline_id)
            notice = f"Cancel sent; the pipeline is {answer.get('state')}."
    except FlowError as exc:
        return web.render("error.html", session, 409, message=str(exc))
    return RedirectResponse(
        f"{ui}/pipelines/{quote(pipeline_id, safe='')}?notice={quote(notice)}", status_code=303
    )


def pipelines_router(web: Web, ui: str) -> APIRouter:
    router = APIRouter(prefix=ui, include_in_schema=False)

    @router.get("/pipelines")
    def pipelines(request: Request) -> Response:
        state = request.query_params.get("state", "")
        return web.page(request, "pipelines.html", lambda _s: _list_context(web, state))

    @router.get("/pipelines/{pipeline_id}")
    def pipeline(request: Request, pipeline_id: str) -> Response:
        notice = request.query_params.get("notice")
        return web.page(
            request, "pipeline.html",
            lambda _s: {**pipeline_context(web, pipeline_id), "notice": notice},
        )  # fmt: skip

    @router.get("/parts/pipeline/{pipeline_id}")
    def pipeline_part(request: Request, pipeline_id: str) -> Response:
        return web.page(request, "_pipeline.html", lambda _s: pipeline_context(web, pipeline_id))

    @router.post("/pipelines/{pipeline_id}/retry")
    async def retry(request: Request, pipeline_id: str) -> Response:
        return await _write(web, ui, request, pipeline_id, "retry")

    @router.post("/pipelines/{pipeline_id}/cancel")
    async def cancel(request: Request, pipeline_id: str) -> Response:
        return await _write(web, ui, request, pipeline_id, "cancel")

    return router
