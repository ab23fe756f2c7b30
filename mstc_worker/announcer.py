"""What the service tells anyone who listens about a request: its lifecycle events.

Owns when and how the events of `events` are published on the service's broker connection
(and so on its thread), apart from the replies, which go to one client (`replier`):

* `accepted` and `running` are best effort: one that cannot be published is logged and
  dropped, never retried (re-raising would run the caller's whole hand-over again).
* The final event is owed like the reply, and published before it, with a confirm: one that
  cannot be published raises BrokerUnavailable, so nothing after it happens (no reply, no
  ack, the Job not let go) and the broker runs the whole piece of work again on the next
  connection. What was confirmed before such a retry is remembered, so the retry does not
  say it again; the caller says when the reply is out too (`settled`) and it is forgotten.
* With `events_job_listener_topic`, a `succeeded` final event also goes out under the MQTT job
  listener's completion topic, owed the same way. Only `succeeded`: that listener sent its
  message when a Job completed, and logged errors without one; subscribers chain the next
  Job on it, which a failed Job should not start.

An empty `events_exchange` turns all of it off.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mstc_worker import events
from mstc_worker.events import JobFacts
from mstc_worker.ports import BrokerPort, BrokerUnavailable
from mstc_worker.protocol import Reply, reply_body
from mstc_worker.settings import Settings

__all__ = ["Announcer"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class Announcer:
    """Publishes a request's lifecycle events to the events exchange."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: BrokerPort,
        replica: str | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._exchange = settings.events_exchange
        self._namespace = settings.namespace
        self._job_listener = settings.events_job_listener_topic
        self._broker = broker
        self._replica = replica or socket.gethostname()
        self._clock = clock
        self._confirmed: set[tuple[str, str]] = set()  # (eventId, routing key) until settled

    @property
    def on(self) -> bool:
        return bool(self._exchange)

    def progress(
        self, state: str, facts: JobFacts, job_name: str, request: dict[str, Any] | None = None
    ) -> None:
        """Say `accepted` (with the request as received) or `running`; best effort."""
        if not self.on:
            return
        body = events.progress_body(state, facts, job_name=job_name, namespace=self._namespace,
                                    now=self._clock(), replica=self._replica,
                                    request=request)  # fmt: skip
        try:
            self._publish(events.routing_key(state, facts.requested_name), body, facts, state)
        except BrokerUnavailable as exc:
            log.info("job %s: event %r not sent: %s", job_name, state, exc)

    def final(self, reply: Reply, facts: JobFacts) -> None:
        """Publish the final event for `reply`, confirmed; raises BrokerUnavailable if not."""
        if not self.on:
            return
        fields = json.loads(reply_body(reply))
        state = str(fields["status"])
        body = events.final_body(fields, facts, now=self._clock(), replica=self._replica)
        keys = [events.routing_key(state, facts.requested_name)]
        if self._job_listener and state == "succeeded":
            keys.append(events.job_listener_key(facts.requested_name))
        event_id = events.event_id(facts.request_id, state)
        for key in keys:
            if (event_id, key) in self._confirmed:
                continue  # confirmed before this piece of work was interrupted
            self._publish(key, body, facts, state)
            self._confirmed.add((event_id, key))

    def settled(self, facts: JobFacts) -> None:
        """The reply after the final event is out: nothing of it will be retried."""
        self._confirmed = {
            sent for sent in self._confirmed if not sent[0].startswith(f"{facts.request_id}:")
        }

    def _publish(self, key: str, body: bytes, facts: JobFacts, state: str) -> None:
        self._broker.publish_event(self._exchange, key, body,
                                   message_id=events.event_id(facts.request_id, state),
                                   message_type=events.EVENT_TYPE)  # fmt: skip
