"""`/api/v1/catalog`, `/api/v1/catalog/{entry}/fire`, `/api/v1/parked`, `/api/v1/replicas`,
`/api/v1/flags`: what the flow would fire, firing an entry by hand, the firings it had to
park, the worker replicas with their last heartbeat, and the open stalled flags.

Firing takes the request's body, as bytes, as the trigger's payload (what a message on the
entry's topic would have carried; it reaches the Job as `MSTC_TRIGGER_PAYLOAD`). It is the
only async handler, to read that body; the port call still runs in the thread pool.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from mstc_flow.api.auth import Tokens
from mstc_flow.api.ports import FlowPorts

__all__ = ["catalog_router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or an unknown one"},
    503: {"description": "The store or the broker is unreachable; try again"},
}
_FIRE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The read token may not change anything"},
    404: {"description": "No such catalog entry"},
    409: {"description": "Refused (e.g. the entry is at its maximum in flight)"},
}
_PAYLOAD = {
    "requestBody": {
        "description": "The trigger's payload, verbatim (any bytes; UTF-8 text for the Job).",
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
    }
}


def catalog_router(ports: FlowPorts, tokens: Tokens, prefix: str) -> APIRouter:
    reader = [Depends(tokens.reader())]
    router = APIRouter(prefix=prefix, responses=_ERRORS)

    @router.get("/catalog", dependencies=reader, tags=["catalog"], summary="The active catalog")
    def catalog() -> dict[str, Any]:
        return ports.catalog()

    @router.post(
        "/catalog/{entry}/fire",
        dependencies=[Depends(tokens.admin())],
        status_code=202,
        tags=["catalog"],
        responses=_FIRE_ERRORS,
        openapi_extra=_PAYLOAD,
        summary="Fire an entry by hand; the body is the payload",
    )
    async def fire(
        entry: Annotated[str, Path(description="The entry's name.", min_length=1)],
        request: Request,
    ) -> dict[str, Any]:
        payload = await request.body()
        return await run_in_threadpool(ports.fire, entry, payload)

    @router.get(
        "/parked", dependencies=reader, tags=["catalog"], summary="Firings parked for an operator"
    )
    def parked() -> dict[str, Any]:
        return {"items": ports.parked()}

    @router.get(
        "/replicas",
        dependencies=reader,
        tags=["replicas"],
        summary="Worker replicas and their last heartbeat",
    )
    def replicas() -> dict[str, Any]:
        return {"items": [replica.to_json() for replica in ports.replicas()]}

    @router.get(
        "/flags",
        dependencies=reader,
        tags=["flags"],
        summary="Open stalled flags: pending or overdue Jobs, quiet worker replicas",
    )
    def flags() -> dict[str, Any]:
        return {"items": ports.flags()}

    return router
