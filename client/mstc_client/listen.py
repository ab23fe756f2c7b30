"""The listening side of `mstc`: `mstc events --follow` and `mstc workers`.

Owns what those two commands print: one line (or one JSON object) per job event as it arrives,
and a table of the replicas heard from during about one heartbeat interval. Both only listen
(a queue of their own on the events exchange, see `events`); there is no history to read yet,
so a replica or an event is known only from the moment the command is listening. Errors are
raised as the client's own (`WaitTimeout` when no replica was heard), and `cli` turns them
into its exit codes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from mstc_client.config import ClientConfig
from mstc_client.errors import WaitTimeout
from mstc_client.events import (
    HEARTBEAT_KEYS,
    EventFeed,
    JobEvent,
    ReplicaHeartbeat,
    job_event_keys,
)

__all__ = ["DEFAULT_INTERVAL_SECONDS", "event_line", "follow_events", "list_workers"]

DEFAULT_INTERVAL_SECONDS = 5  # the worker's MSTC_REPLICA_HEARTBEAT_SECONDS default
_MARGIN_SECONDS = 2.0


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def follow_events(
    config: ClientConfig, out: TextIO, *, job: str | None, final: bool, as_json: bool
) -> None:
    """Print job events as they arrive, until interrupted (or the broker is lost)."""
    with EventFeed(config, job_event_keys(job, final=final)) as feed:
        for message in feed.messages():
            if not isinstance(message, JobEvent):
                continue
            # The routing key holds the name as a topic word, which several names can share.
            if job is not None and message.requested_name != job:
                continue
            if final and not message.final:
                continue
            _say(out, json.dumps(dict(message.fields)) if as_json else event_line(message))


def event_line(event: JobEvent) -> str:
    """`at  event  requested-name  job-name  details`, '-' for what the event lacks."""
    columns = [
        event.at or "-",
        f"{event.event:<9}",
        event.requested_name or "-",
        event.job_name or "-",
        _details(event),
    ]
    return "  ".join(columns).rstrip()


def _details(event: JobEvent) -> str:
    fields = event.fields
    if not event.final:
        namespace = fields.get("namespace")
        return f"namespace {namespace}" if namespace else ""
    parts = [event.status or event.event]
    if fields.get("exitCode") is not None:
        parts.append(f"exit code {fields['exitCode']}")
    for key in ("reason", "message", "error"):
        if fields.get(key):
            parts.append(str(fields[key]))
    duration = fields.get("durationMs")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        parts.append(f"{duration / 1000:.1f} s")
    return ", ".join(parts)


def list_workers(config: ClientConfig, out: TextIO, *, wait: float | None, as_json: bool) -> None:
    """Listen for heartbeats, then print each replica's last word; WaitTimeout if none."""
    replicas = _listen(config, wait)
    if not replicas:
        listened = wait if wait is not None else DEFAULT_INTERVAL_SECONDS + _MARGIN_SECONDS
        raise WaitTimeout(
            f"No worker heartbeat on exchange {config.events_exchange!r} within {listened:g} s: "
            "no replica is running, or the workers publish elsewhere (MSTC_EVENTS_EXCHANGE)."
        )
    rows = sorted(replicas.values(), key=lambda beat: beat.replica)
    if as_json:
        _say(out, json.dumps({"workers": [_worker_object(beat) for beat in rows]}))
    else:
        _say(out, _table(rows))


def _listen(config: ClientConfig, wait: float | None) -> dict[str, ReplicaHeartbeat]:
    """Each replica's last message within `wait` s (default: one interval and a margin)."""
    start = time.monotonic()
    deadline = start + (wait if wait is not None else DEFAULT_INTERVAL_SECONDS + _MARGIN_SECONDS)
    last: dict[str, ReplicaHeartbeat] = {}
    with EventFeed(config, HEARTBEAT_KEYS) as feed:
        while time.monotonic() < deadline:
            for message in feed.messages(until=deadline):
                if not isinstance(message, ReplicaHeartbeat):
                    continue
                last[message.replica] = message
                if wait is None and message.interval_seconds:  # a slower replica: hear it too
                    deadline = max(deadline, start + message.interval_seconds + _MARGIN_SECONDS)
    return last


def _state(beat: ReplicaHeartbeat) -> str:
    return "stopping" if beat.stopping else "running"


def _worker_object(beat: ReplicaHeartbeat) -> dict[str, Any]:
    return {
        "replica": beat.replica,
        "state": _state(beat),
        "version": beat.version,
        "inFlight": beat.in_flight,
        "capacity": beat.capacity,
        "lastSeen": beat.at,
        "startedAt": beat.started_at,
        "intervalSeconds": beat.interval_seconds,
    }


def _ago(at: str | None) -> str:
    if at is None:
        return "-"
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return at
    seconds = max(0.0, (datetime.now(UTC) - moment).total_seconds())
    return f"{at} ({seconds:.1f} s ago)"


def _table(rows: Sequence[ReplicaHeartbeat]) -> str:
    header = ("REPLICA", "VERSION", "STATE", "IN FLIGHT", "CAPACITY", "LAST SEEN")
    lines = [header] + [
        (
            beat.replica,
            beat.version or "-",
            _state(beat),
            "-" if beat.in_flight is None else str(beat.in_flight),
            "-" if beat.capacity is None else str(beat.capacity),
            _ago(beat.at),
        )
        for beat in rows
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
