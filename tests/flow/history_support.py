"""Events and heartbeats as the worker publishes them (the events spec), for the history's
and the recorder's tests: fixed times from T0 so every backend sees the same values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mstc_flow.store.history import History, JobQuery

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (
        (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def event(state: str, request_id: str, seconds: float = 0, **fields: Any) -> dict[str, Any]:
    """A job event as the worker publishes it (events-spec), `seconds` after T0."""
    body: dict[str, Any] = {
        "format": 1,
        "event": state,
        "eventId": f"{request_id}:{state}",
        "requestId": request_id,
        "at": at(seconds),
        "replica": "worker-a",
        "requestedName": "convert",
        "correlationId": "flow:" + "0" * 32,
        "image": "example/convert:1",
        "labels": {"team": "blue"},
    }
    if state in {"accepted", "running"}:
        body |= {"jobName": f"convert-{request_id[:5]}", "namespace": "jobs"}
    if state == "accepted":
        body["request"] = {"image": "example/convert:1", "jobName": "convert"}
    if state not in {"accepted", "running"}:
        body |= {
            "status": state,
            "jobName": f"convert-{request_id[:5]}",
            "namespace": "jobs",
            "exitCode": 0 if state == "succeeded" else 3,
            "reason": "Completed" if state == "succeeded" else "BackoffLimitExceeded",
            "logBucket": "logs",
            "logObject": f"convert-{request_id[:5]}.log",
            "finishedAt": at(seconds - 0.5),
            "durationMs": 1500,
            "podsSucceeded": 1,
        }
    return body | fields


def rid(n: int) -> str:
    return f"{n:064x}"


def lifecycle(history: History, request_id: str, start: float, final: str = "succeeded",
              **fields: Any) -> None:  # fmt: skip
    for offset, state in enumerate(("accepted", "running", final)):
        assert history.record_event(event(state, request_id, start + offset, **fields))


def everything(history: History, query: JobQuery) -> list[str]:
    """Every request id the query lists, following the cursor to the end."""
    found: list[str] = []
    cursor = None
    while True:
        page = history.list_jobs(JobQuery(**{**query.__dict__, "cursor": cursor}))
        found += [job.request_id for job in page.items]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def heartbeat(
    replica: str, seconds: float, kind: str = "heartbeat", **fields: Any
) -> dict[str, Any]:
    return {"format": 1, "event": kind, "replica": replica, "version": "0.1.0", "inFlight": 2,
            "capacity": 100, "startedAt": at(-60), "at": at(seconds), "intervalSeconds": 5,
            **fields}  # fmt: skip
