"""`/api/v1/queue` and `/api/v1/queue/purge`: what waits for a worker, and emptying the work
queue of the requests no worker has taken yet (`mstc queue status|purge`).

The status is the work queue's ready messages and consumers (RabbitMQ's counts), what the
worker replicas hold (their heartbeats) and the flow's own waiting work (pending firings,
pipeline tasks waiting and queued). The purge takes out only requests still waiting, never one
a worker holds, and answers what it dropped and what became of the flow's records
(`mstc_flow.queue_ops`). Read token for the status, admin token for the purge.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from mstc_flow.api.auth import Tokens
from mstc_flow.api.ports import FlowPorts

__all__ = ["queue_router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or an unknown one"},
    503: {"description": "RabbitMQ or the store is unreachable; try again"},
}
_PURGE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The read token may not change anything"},
}


def queue_router(ports: FlowPorts, tokens: Tokens, prefix: str) -> APIRouter:
    router = APIRouter(prefix=f"{prefix}/queue", tags=["queue"], responses=_ERRORS)

    @router.get(
        "",
        dependencies=[Depends(tokens.reader())],
        summary="The work queue's waiting requests and the flow's waiting work",
    )
    def queue_status() -> dict[str, Any]:
        return ports.queue_status()

    @router.post(
        "/purge",
        dependencies=[Depends(tokens.admin())],
        responses=_PURGE_ERRORS,
        summary="Drop the requests no worker has taken yet; what was dropped",
    )
    def purge_queue() -> dict[str, Any]:
        return ports.purge_queue()

    return router
