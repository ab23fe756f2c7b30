"""`/api/v1/jobs...`: the history's jobs, listed, shown with their events and log, retried
and cancelled.

A job's `key` is its requestId or the name of the Job the worker made (`ports.get_job`
resolves both). Listing filters are query parameters checked here, each named when wrong:
`state` (one of the worker's states), `name` (requested or made), `label` (`key=value`),
`image`, `since`/`until` (ISO 8601; no zone means UTC), `flagged` (only Jobs with an open
stalled flag), `limit` (1..500) and `cursor` (the
`nextCursor` of the page before, opaque). The handlers are plain functions: FastAPI runs them
in its thread pool, since the ports block on the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse, Response

from mstc_flow.api.auth import Tokens
from mstc_flow.api.ports import FlowPorts
from mstc_flow.errors import BadQuery
from mstc_flow.store.history_records import JobQuery

__all__ = ["MAX_LIMIT", "jobs_router"]

MAX_LIMIT = 500
JobState = Literal[
    "accepted", "running", "succeeded", "failed", "timeout", "error", "cancelled", "rejected"
]
Key = Annotated[str, Path(description="The requestId, or the made Job's name.", min_length=1)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A query parameter is invalid; the error names it"},
    401: {"description": "No token, or an unknown one"},
    404: {"description": "No such job"},
    503: {"description": "The store is unreachable; try again"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    403: {"description": "The read token may not change anything"},
    409: {"description": "Refused: retrying the call cannot help; the error says why"},
}


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _label(text: str | None) -> str | None:
    if text is not None and (not text.partition("=")[1] or text.startswith("=")):
        raise BadQuery(f"query parameter 'label': expected KEY=VALUE, got {text!r}")
    return text


def job_query(  # noqa: PLR0917 (one argument per documented query parameter)
    state: Annotated[JobState | None, Query(description="The job's current state.")] = None,
    name: Annotated[str | None, Query(description="Requested or made Job name.")] = None,
    label: Annotated[str | None, Query(description="A label, as key=value.")] = None,
    image: Annotated[str | None, Query(description="The container image.")] = None,
    since: Annotated[datetime | None, Query(description="Accepted at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Accepted before (ISO 8601).")] = None,
    flagged: Annotated[bool, Query(description="Only Jobs with an open stalled flag.")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Jobs per page.")] = 50,
    cursor: Annotated[str | None, Query(description="nextCursor of the page before.")] = None,
) -> JobQuery:
    """The listing's query parameters as the history's `JobQuery`."""
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and until <= since:
        raise BadQuery("query parameter 'until': must be later than 'since'")
    return JobQuery(state=state, name=name or None, label=_label(label), image=image or None,
                    since=since, until=until, flagged=flagged, limit=limit,
                    cursor=cursor or None)  # fmt: skip


def jobs_router(ports: FlowPorts, tokens: Tokens, prefix: str) -> APIRouter:
    reader = [Depends(tokens.reader())]
    admin = [Depends(tokens.admin())]
    router = APIRouter(prefix=f"{prefix}/jobs", tags=["jobs"], responses=_ERRORS)

    @router.get("", dependencies=reader, summary="List jobs, newest first, a page at a time")
    def list_jobs(query: Annotated[JobQuery, Depends(job_query)]) -> dict[str, Any]:
        page = ports.list_jobs(query)
        flags = ports.job_flags([job.request_id for job in page.items])
        items = [{**job.to_json(), "flags": flags.get(job.request_id, [])} for job in page.items]
        return {"items": items, "nextCursor": page.next_cursor}

    @router.get("/{key}", dependencies=reader, summary="One job, and the firing that made it")
    def show_job(key: Key) -> dict[str, Any]:
        job = ports.get_job(key)
        flags = ports.job_flags([job.request_id]).get(job.request_id, [])
        return {**job.to_json(), "firing": ports.job_firing(job.request_id), "flags": flags}

    @router.get("/{key}/events", dependencies=reader, summary="The job's events, oldest first")
    def job_events(key: Key) -> dict[str, Any]:
        job = ports.get_job(key)
        return {"items": ports.job_events(job.request_id)}

    @router.get(
        "/{key}/log",
        dependencies=reader,
        summary="The job's log, from the bucket",
        response_class=PlainTextResponse,
    )
    def job_log(key: Key) -> Response:
        log = ports.read_log(ports.get_job(key))
        return PlainTextResponse(log, media_type="text/plain; charset=utf-8")

    @router.post(
        "/{key}/retry",
        dependencies=admin,
        status_code=202,
        responses=_WRITE_ERRORS,
        summary="Send the job's request again, linked to the first",
    )
    def retry_job(key: Key) -> dict[str, Any]:
        return ports.retry(key)

    @router.post(
        "/{key}/cancel",
        dependencies=admin,
        responses=_WRITE_ERRORS,
        summary="Cancel the job; the worker's answer",
    )
    def cancel_job(key: Key) -> dict[str, Any]:
        return ports.cancel(key)

    return router
