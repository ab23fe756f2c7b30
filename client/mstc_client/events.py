"""Job events and replica heartbeats as the worker publishes them to a topic exchange.

Owns the client's reading of those wire formats (README: "Job events", "Replica heartbeats"):
the routing keys to bind for "every event", "final events only" and "one Job's events", and the
typed views, `JobEvent` and `ReplicaHeartbeat`. Parsing is tolerant: unknown fields are kept
(in `fields`) and ignored, a missing optional one is None, and a message that is not one of
ours (no JSON object, no known `event`) is skipped rather than ending a listener. The formats
are the worker's; the client has its own copy of them, as it shares no code with the worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mstc_client.broker_topics import TopicMessage, TopicSubscription
from mstc_client.config import ClientConfig
from mstc_client.errors import ConfigError

__all__ = [
    "FINAL_EVENTS",
    "HEARTBEAT_KEYS",
    "EventFeed",
    "JobEvent",
    "ReplicaHeartbeat",
    "job_event_keys",
    "parse_message",
    "topic_word",
]

FINAL_EVENTS = frozenset({"succeeded", "failed", "timeout", "error", "cancelled", "rejected"})
PROGRESS_EVENTS = frozenset({"accepted", "running"})
HEARTBEAT_KEYS = ("mstc.worker.#",)

_NOT_A_WORD_CHARACTER = re.compile(r"[^A-Za-z0-9_-]")


def topic_word(name: str | None) -> str:
    """`name` as the one topic level the worker puts it in (its body has it exactly)."""
    return _NOT_A_WORD_CHARACTER.sub("_", name or "_")[:100]


def job_event_keys(job: str | None = None, *, final: bool = False) -> list[str]:
    """Binding keys for job events: all, or only final ones, of every Job or the one named."""
    phase = "final" if final else "*"
    if job is None:
        return ["mstc.job.final.#"] if final else ["mstc.job.#"]
    return [f"mstc.job.{phase}.*.{topic_word(job)}"]


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def _integer(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class JobEvent:
    """A Job's `accepted`, `running` or final event; `fields` is the whole body as sent."""

    event: str
    at: str | None
    requested_name: str | None
    job_name: str | None
    status: str | None
    request_id: str | None
    replica: str | None
    fields: Mapping[str, Any] = field(repr=False)

    @property
    def final(self) -> bool:
        return self.event in FINAL_EVENTS

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> JobEvent:
        return cls(
            event=str(body["event"]),
            at=_text(body, "at"),
            requested_name=_text(body, "requestedName"),
            job_name=_text(body, "jobName"),
            status=_text(body, "status"),
            request_id=_text(body, "requestId"),
            replica=_text(body, "replica"),
            fields=dict(body),
        )


@dataclass(frozen=True)
class ReplicaHeartbeat:
    """A replica's `heartbeat`, or its last word, `stopping`."""

    event: str
    replica: str
    version: str | None
    in_flight: int | None
    capacity: int | None
    started_at: str | None
    at: str | None
    interval_seconds: int | None
    fields: Mapping[str, Any] = field(repr=False)

    @property
    def stopping(self) -> bool:
        return self.event == "stopping"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ReplicaHeartbeat:
        return cls(
            event=str(body["event"]),
            replica=str(body["replica"]),
            version=_text(body, "version"),
            in_flight=_integer(body, "inFlight"),
            capacity=_integer(body, "capacity"),
            started_at=_text(body, "startedAt"),
            at=_text(body, "at"),
            interval_seconds=_integer(body, "intervalSeconds"),
            fields=dict(body),
        )


def parse_message(message: TopicMessage) -> JobEvent | ReplicaHeartbeat | None:
    """The typed view of `message`, or None when it is not an event or heartbeat we know."""
    try:
        body = json.loads(message.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    event = body.get("event")
    if event in FINAL_EVENTS or event in PROGRESS_EVENTS:
        return JobEvent.from_body(body)
    if event in ("heartbeat", "stopping") and isinstance(body.get("replica"), str):
        return ReplicaHeartbeat.from_body(body)
    return None


class EventFeed:
    """Typed messages from a subscription to the events exchange; a context manager."""

    def __init__(self, config: ClientConfig, keys: list[str] | tuple[str, ...]) -> None:
        if not config.events_exchange:
            raise ConfigError(
                "Events are off: MSTC_EVENTS_EXCHANGE is empty (the worker's default is amq.topic)."
            )
        self.exchange = config.events_exchange
        self._subscription = TopicSubscription(config, config.events_exchange, keys)

    def __enter__(self) -> EventFeed:
        self._subscription.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._subscription.close()

    def messages(self, *, until: float | None = None) -> Iterator[JobEvent | ReplicaHeartbeat]:
        """What arrives until the monotonic time `until` (None: until interrupted)."""
        for message in self._subscription.messages(until=until):
            parsed = parse_message(message)
            if parsed is not None:
                yield parsed
