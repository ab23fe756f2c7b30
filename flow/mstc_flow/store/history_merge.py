"""How one event changes what the history knows of its request, whatever order events come in.

Pure rules, no database: `read_event` checks a decoded event body and takes what the history
keeps from it; `merge` folds it into the job's row. The rules make the result the same for
every arrival order (events are redelivered and replicas race):

* a state is replaced only by a later one in the lifecycle (accepted < running < final), so a
  final state is never overwritten by a late accepted or running; of two final events (which
  the worker does not send) the one published last wins;
* a field is filled by any event that carries it and is never blanked by one that does not;
  the final event's outcome fields (exit code, reason, log location, ...) come from it alone;
* `seen_at`, the sort key of listings, is the earliest event's time; the replica is the one
  that accepted the request (else the first that said anything of it).

Hostile values never reach the database as they came: text is bounded and cleaned, numbers
out of a 64-bit column's range are dropped, a body without a usable id is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mstc_flow.errors import PermanentError
from mstc_flow.store.history_records import FINAL_STATES, STATES, utc
from mstc_flow.store.history_tables import KEY_LENGTH, HistoryJob, clean_text

__all__ = ["EventFacts", "as_int", "merge", "new_job", "parse_time", "read_event"]

_RANK = {"accepted": 1, "running": 2} | dict.fromkeys(FINAL_STATES, 3)
_INT64 = 2**63
_OUTCOME_FIELDS = {  # reply field -> column, taken from the winning final event only
    "exitCode": "exit_code",
    "reason": "reason",
    "message": "message",
    "error": "error",
    "logBucket": "log_bucket",
    "logObject": "log_object",
    "outputBucket": "output_bucket",
    "podsSucceeded": "pods_succeeded",
    "podsFailed": "pods_failed",
    "durationMs": "duration_ms",
}
_LONG_TEXT = {"reason", "message", "error"}  # unindexed Text columns: a larger bound


@dataclass(frozen=True)
class EventFacts:
    event_id: str
    request_id: str
    state: str
    at: datetime
    body: dict[str, Any]


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time (with Z or an offset; naive = UTC), or None when it is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def as_int(value: object, bound: int = _INT64) -> int | None:
    """A whole number that fits the column, else None (JSON true is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -bound <= value < bound else None


def read_event(body: Mapping[str, Any], now: datetime) -> EventFacts:
    """The facts of a job event, or PermanentError saying why it cannot be recorded."""
    event_id = clean_text(body.get("eventId"), KEY_LENGTH + 1)
    request_id = clean_text(body.get("requestId"), KEY_LENGTH + 1)
    if not event_id or not request_id:
        raise PermanentError("A job event needs a string eventId and requestId; dropped.")
    if len(event_id) > KEY_LENGTH or len(request_id) > KEY_LENGTH:
        raise PermanentError(f"eventId and requestId are at most {KEY_LENGTH} characters.")
    state = body.get("event")
    if state not in STATES:
        raise PermanentError(f"Unknown job event {str(state)[:40]!r}; dropped.")
    at = parse_time(body.get("at")) or now
    return EventFacts(event_id, request_id, str(state), at, dict(body))


def new_job(facts: EventFacts, now: datetime) -> HistoryJob:
    """The row of a request first heard of by this event, to be merged with it in the same
    transaction: its state is none yet, so the event's state wins."""
    return HistoryJob(
        request_id=facts.request_id,
        state="",
        state_at=facts.at,
        labels={},
        replica_accepted=False,
        seen_at=facts.at,
        updated_at=now,
    )


def merge(job: HistoryJob, facts: EventFacts, now: datetime) -> None:
    """Fold one event into the row (see the module's rules)."""
    body = facts.body
    job.seen_at = min(job.seen_at, facts.at)
    job.updated_at = now
    for key, column in (
        ("requestedName", "requested_name"),
        ("jobName", "job_name"),
        ("namespace", "namespace"),
        ("image", "image"),
        ("correlationId", "correlation_id"),
    ):
        value = clean_text(body.get(key))
        if value is not None:
            setattr(job, column, value)
    labels = _labels(body.get("labels"))
    if labels:
        job.labels = {**job.labels, **labels}
    if facts.state == "accepted":
        _merge_accepted(job, facts)
    elif facts.state == "running":
        job.running_at = facts.at
    _merge_replica(job, facts)
    if _wins(facts, job):
        job.state, job.state_at = facts.state, facts.at
        if facts.state in FINAL_STATES:
            _merge_final(job, facts)


def _merge_replica(job: HistoryJob, facts: EventFacts) -> None:
    replica = clean_text(facts.body.get("replica"))
    accepted = facts.state == "accepted"
    if replica and (job.replica is None or (accepted and not job.replica_accepted)):
        job.replica, job.replica_accepted = replica, accepted


def _merge_accepted(job: HistoryJob, facts: EventFacts) -> None:
    job.accepted_at = facts.at
    request = facts.body.get("request")
    if isinstance(request, dict):
        job.request = request


def _wins(facts: EventFacts, job: HistoryJob) -> bool:
    rank, current = _RANK[facts.state], _RANK.get(job.state, 0)
    if rank != current:
        return rank > current
    if rank < 3:  # the same progress state again: nothing new
        return False
    return (facts.at, facts.state) > (job.state_at, job.state)


def _merge_final(job: HistoryJob, facts: EventFacts) -> None:
    body = facts.body
    job.finished_at = parse_time(body.get("finishedAt")) or facts.at
    for key, column in _OUTCOME_FIELDS.items():
        value = body.get(key)
        if column in {"exit_code", "pods_succeeded", "pods_failed", "duration_ms"}:
            setattr(job, column, as_int(value))
        else:
            limit = 10_000 if column in _LONG_TEXT else 1000
            setattr(job, column, clean_text(value, limit))


def _labels(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    labels: dict[str, str] = {}
    for key, item in list(value.items())[:100]:
        # A label value meant as text but sent as a JSON scalar: true, 3, 1.5.
        scalar = isinstance(item, bool | int | float)
        text, name = clean_text(json.dumps(item) if scalar else item), clean_text(key)
        if name and text is not None:
            labels[name] = text
    return labels
