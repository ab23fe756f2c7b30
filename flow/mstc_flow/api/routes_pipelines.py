"""`/api/v1/pipelines...`: pipelines submitted, listed, shown with their tasks, retried and
cancelled.

POST takes the pipeline file's document as the body (JSON; YAML when the Content-Type says
yaml), read up to `MAX_PIPELINE_BYTES` (more is refused 413 without reading on). A refused
document is 422 with the sentence and, apart, the `task`, `field` and `line` it names.
Answers (camelCase): POST 201 `{"id", "name", "tasks", "stages"}`; GET one
`{"id", "name", "state", "reason", "createdAt", "finishedAt", "parallelism", "bucket",
"prefix", "counts": {state: n}, "tasks": [{"name", "state", "attempts", "jobName",
"startedAt", "finishedAt", "reason", "needs": [task names]}]}`; the list `{"items": [summary
without tasks]}`; retry `{"id", "retried": [task names]}`; cancel the pipeline as GET shows it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from mstc_client.pipeline_files import MAX_PIPELINE_BYTES
from mstc_flow.api.auth import Tokens
from mstc_flow.api.ports import FlowPorts
from mstc_flow.errors import BadQuery, TooLarge

__all__ = ["pipelines_router"]

PipelineState = Literal["running", "succeeded", "failed", "cancelled"]
PipelineId = Annotated[str, Path(description="The pipeline's id (p-<12 hex>).", min_length=1)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or an unknown one"},
    404: {"description": "No such pipeline"},
    503: {"description": "The store or the broker is unreachable; try again"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    403: {"description": "The read token may not change anything"},
    409: {"description": "Refused in the pipeline's or task's state; the error says why"},
}
_CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_WRITE_ERRORS,
    413: {"description": "The document is over the size limit"},
    422: {"description": "The document is refused; `task`, `field` and `line` say where"},
}
_RETRY_BODY = {
    "requestBody": {
        "description": '{"task": NAME}: that task and its skipped dependants; {"task": null} '
        "or no body: every failed, skipped and cancelled task.",
        "required": False,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
_DOCUMENT = {
    "requestBody": {
        "description": "The pipeline file's document (see the client's pipeline.schema.json).",
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def _task_of(body: bytes) -> str | None:
    """The `task` of a retry's body (JSON whatever the Content-Type; none or null: all)."""
    if not body.strip():
        return None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadQuery(f"request body: not JSON ({exc})") from exc
    task = value.get("task") if isinstance(value, dict) else 0
    if task is not None and not isinstance(task, str):
        raise BadQuery('request body: expected {"task": NAME} or {"task": null}')
    return task


async def _document(request: Request) -> bytes:
    """The body, refused once it passes the limit (a hostile client cannot make us hold more)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_PIPELINE_BYTES:
            raise TooLarge(f"The pipeline document is over the limit of {MAX_PIPELINE_BYTES} "
                           "bytes.")  # fmt: skip
    return bytes(data)


def pipelines_router(ports: FlowPorts, tokens: Tokens, prefix: str) -> APIRouter:
    reader, admin = [Depends(tokens.reader())], [Depends(tokens.admin())]
    router = APIRouter(prefix=prefix, tags=["pipelines"])

    @router.get("/pipelines", dependencies=reader, responses=_ERRORS,
                summary="Pipelines, most recent first")  # fmt: skip
    def list_pipelines(
        state: Annotated[PipelineState | None, Query(description="Only those in it.")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 50,
    ) -> dict[str, Any]:
        return {"items": ports.list_pipelines(state, limit)}

    @router.post("/pipelines", dependencies=admin, status_code=201, responses=_CREATE_ERRORS,
                 openapi_extra=_DOCUMENT, summary="Submit a pipeline")  # fmt: skip
    async def create_pipeline(request: Request) -> dict[str, Any]:
        data = await _document(request)
        fmt = "yaml" if "yaml" in request.headers.get("content-type", "") else "json"
        return await run_in_threadpool(ports.create_pipeline, data, fmt)

    @router.get("/pipelines/{pipeline_id}", dependencies=reader, responses=_ERRORS,
                summary="A pipeline, its counts and its tasks")  # fmt: skip
    def get_pipeline(pipeline_id: PipelineId) -> dict[str, Any]:
        return ports.get_pipeline(pipeline_id)

    @router.post(
        "/pipelines/{pipeline_id}/retry",
        dependencies=admin,
        responses=_WRITE_ERRORS,
        openapi_extra=_RETRY_BODY,
        summary="Run failed, skipped and cancelled tasks again",
    )
    async def retry_pipeline(pipeline_id: PipelineId, request: Request) -> dict[str, Any]:
        task = _task_of(await request.body())
        return await run_in_threadpool(ports.retry_pipeline, pipeline_id, task)

    @router.post("/pipelines/{pipeline_id}/cancel", dependencies=admin, responses=_WRITE_ERRORS,
                 summary="Cancel a pipeline: waiting tasks and running Jobs")  # fmt: skip
    def cancel_pipeline(pipeline_id: PipelineId) -> dict[str, Any]:
        return ports.cancel_pipeline(pipeline_id)

    return router
