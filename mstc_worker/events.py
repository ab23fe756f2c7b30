"""The wire format of a request's lifecycle events: routing keys, the name word, the bodies.

Owns what /work/events-spec.md (and the README's "Lifecycle events") promise subscribers, so
that every publisher says it one way: `mstc.job.<phase>.<state>.<word(requested jobName)>` on
a topic exchange (MQTT `mstc/job/<phase>/<state>/<word>`), phase `progress` for `accepted`
and `running`, `final` for the states a reply can have. Pure: the caller gives the time and
the replica's id, so the bodies are exact and testable byte for byte.

How often each is published, which is the publishers' business (`announcer`, `runner`):

* `accepted` and `running`: at least once, best effort. A worker that restarts, or a Job
  adopted by another replica, may say them again; a broker outage at that moment drops them.
* The final event: once. It is published (confirmed) before the reply, so a reply never goes
  out without it, and is retried with the reply through an outage. That it went out is then
  written on the Job (`names.FINAL_EVENT_ANNOTATION`, before the Job is let go), and a Job
  finished again (its worker killed) replies without it. The one window left: a worker killed
  after the event's confirm and before that annotation is written (the reply, published in
  that window too, then also comes twice). Its `eventId` is the same every time, so an AMQP
  consumer can drop such a repeat.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EVENT_TYPE",
    "FINAL_STATES",
    "FORMAT",
    "PROGRESS_STATES",
    "JobFacts",
    "event_id",
    "facts_from_annotation",
    "facts_from_body",
    "facts_to_annotation",
    "final_body",
    "job_listener_key",
    "progress_body",
    "routing_key",
    "word",
]

FORMAT = 1
EVENT_TYPE = "mstc.event"  # the AMQP `type` of every event
PROGRESS_STATES = frozenset({"accepted", "running"})
FINAL_STATES = frozenset({"succeeded", "failed", "timeout", "error", "cancelled", "rejected"})
_NOT_WORD = re.compile(r"[^A-Za-z0-9_-]")
_WORD_MAX = 100


@dataclass(frozen=True)
class JobFacts:
    """What every event says about its request, besides its state: plain values, picklable."""

    request_id: str
    requested_name: str | None = None
    correlation_id: str | None = None
    image: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def word(name: str | None) -> str:
    """`name` as exactly one topic level, legal in AMQP and MQTT (see the spec)."""
    if not name:
        return "_"
    return _NOT_WORD.sub("_", name)[:_WORD_MAX]


def routing_key(state: str, requested_name: str | None) -> str:
    """`mstc.job.<phase>.<state>.<word>`; a state that is no event's is a bug, refused."""
    if state in PROGRESS_STATES:
        phase = "progress"
    elif state in FINAL_STATES:
        phase = "final"
    else:
        raise ValueError(f"not an event state: {state!r}")
    return f"mstc.job.{phase}.{state}.{word(requested_name)}"


def job_listener_key(requested_name: str | None) -> str:
    """The MQTT job listener's completion topic (`services/mqtt_job_listener/job_complete/N`)."""
    return f"services.mqtt_job_listener.job_complete.{word(requested_name)}"


def event_id(request_id: str, state: str) -> str:
    """Stable across re-sends, so an AMQP consumer can drop a repeat."""
    return f"{request_id}:{state}"


def _at(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _common(state: str, facts: JobFacts, *, now: datetime, replica: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "event": state,
        "eventId": event_id(facts.request_id, state),
        "requestId": facts.request_id,
        "at": _at(now),
        "replica": replica,
        "requestedName": facts.requested_name,
        "correlationId": facts.correlation_id,
        "image": facts.image,
        "labels": dict(facts.labels),
    }


def _encode(body: dict[str, Any]) -> bytes:
    # As the reply does: a lone surrogate echoed from a request becomes "?", not a failure.
    return json.dumps(body, ensure_ascii=False).encode("utf-8", errors="replace")


def progress_body(
    state: str,
    facts: JobFacts,
    *,
    job_name: str,
    namespace: str,
    now: datetime,
    replica: str,
    request: dict[str, Any] | None = None,
) -> bytes:
    """The body of `accepted` (with the request as received) or `running`."""
    if state not in PROGRESS_STATES:
        raise ValueError(f"not a progress state: {state!r}")
    body = _common(state, facts, now=now, replica=replica)
    body.update(jobName=job_name, namespace=namespace)
    if state == "accepted":
        body["request"] = request if request is not None else {}
    return _encode(body)


def final_body(reply: dict[str, Any], facts: JobFacts, *, now: datetime, replica: str) -> bytes:
    """The final event: the reply's fields as the reply has them, its status the state.

    `reply` is the reply body as sent (parsed JSON); `jobName` is there even without a Job
    (null), so a subscriber can tell a rejection from a Job at one look.
    """
    state = str(reply["status"])
    if state not in FINAL_STATES:
        raise ValueError(f"not a final state: {state!r}")
    return _encode({**_common(state, facts, now=now, replica=replica), "jobName": None, **reply})


def facts_to_annotation(facts: JobFacts) -> str:
    """What a Job carries so that any worker can say `running` and the final event of it."""
    data = {"requestedName": facts.requested_name, "image": facts.image, "labels": facts.labels}
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def facts_from_annotation(
    text: str | None, *, request_id: str, correlation_id: str | None
) -> JobFacts:
    """The facts written by `facts_to_annotation`; what is unreadable is left unknown."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return _facts(data, request_id, correlation_id, name_key="requestedName")


# A rejected body's facts are read only from a body this small: an event is news, not a copy of
# whatever was sent (a rejected body may be megabytes).
_FACTS_BODY_LIMIT = 65_536


def facts_from_body(body: bytes, *, request_id: str, correlation_id: str | None) -> JobFacts:
    """The facts of a request that was not understood (rejected): what its body still says.

    The body is hostile until shown otherwise: one over `_FACTS_BODY_LIMIT` is not read at all
    (its event says nothing of it), and nesting too deep for the JSON reader (a RecursionError,
    not a ValueError) says nothing either, so that the rejection is still announced and replied.
    """
    data: Any = {}
    if len(body) <= _FACTS_BODY_LIMIT:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            data = {}
    if not isinstance(data, dict):
        data = {}
    return _facts(data, request_id, correlation_id, name_key="jobName")


def _facts(
    data: dict[str, Any], request_id: str, correlation_id: str | None, *, name_key: str
) -> JobFacts:
    name, image, labels = data.get(name_key), data.get("image"), data.get("labels")
    labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    return JobFacts(
        request_id=request_id,
        requested_name=name if isinstance(name, str) else None,
        correlation_id=correlation_id,
        image=image if isinstance(image, str) else None,
        labels=labels,
    )
