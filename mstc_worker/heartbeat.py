"""Replica heartbeats: who this replica is and how busy, published every few seconds.

Owns the heartbeat and stopping messages (their routing keys and bodies, the wire format of
the README's "Replica heartbeats") and the rules of sending them:

* A heartbeat every `MSTC_REPLICA_HEARTBEAT_SECONDS`, to `MSTC_EVENTS_EXCHANGE` under
  `mstc.worker.heartbeat.<replica>`, not persistent: a heartbeat is news only while fresh.
* In a broker outage heartbeats are skipped, never queued up: at most one is waiting for the
  connection's thread at a time, none is handed over while the connection is down, and one
  that fails to publish is dropped. Nothing here can break the service.
* On SIGTERM one `stopping` message (`mstc.worker.stopping.<replica>`), and no heartbeat after
  it: both are published on the connection's thread, the stopping one first marks the replica
  stopped there, so a heartbeat handed over before it but run after it is not sent. A stopping
  message that meets a lost connection is published on the next one, if the replica is still
  there: the shutdown waits for it only briefly (see `service`).

A pika call belongs on the connection's thread; the ticker only hands work to it (`submit`).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mstc_worker import __version__, events
from mstc_worker.ports import BrokerPort, BrokerUnavailable
from mstc_worker.settings import Settings

__all__ = ["HEARTBEAT_TYPE", "Heartbeats", "ReplicaBeat", "routing_key", "topic_word"]

log = logging.getLogger(__name__)

HEARTBEAT_TYPE = "mstc.heartbeat"
"""The AMQP `type` of heartbeat and stopping messages."""

# A replica's id becomes one topic level by the job events' rule (the body keeps it exact).
topic_word = events.word


def routing_key(event: str, replica: str) -> str:
    """`mstc.worker.<event>.<replica>`; MQTT subscribers see it as `mstc/worker/...`."""
    return f"mstc.worker.{event}.{topic_word(replica)}"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ReplicaBeat:
    """What a heartbeat says about the replica, apart from its counts and the time."""

    replica: str
    version: str
    capacity: int
    started_at: datetime
    interval_seconds: int

    def body(self, event: str, *, in_flight: int, at: datetime) -> bytes:
        """The JSON body of a `heartbeat` or `stopping` message."""
        return json.dumps(
            {
                "format": 1,
                "event": event,
                "replica": self.replica,
                "version": self.version,
                "inFlight": in_flight,
                "capacity": self.capacity,
                "startedAt": _timestamp(self.started_at),
                "at": _timestamp(at),
                "intervalSeconds": self.interval_seconds,
            },
            separators=(",", ":"),
        ).encode()


def _now() -> datetime:
    return datetime.now(UTC)


class Heartbeats:
    """Publishes this replica's heartbeats through `broker`; `in_flight` is read on its thread.

    `run` is the ticker (a thread of its own); `stopping` may be called from any thread, and
    `announced` is set once the stopping message is confirmed, so that the service can wait
    for it before it closes the connection. Off when the events exchange is the empty string.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        broker: BrokerPort,
        in_flight: Callable[[], int],
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._exchange = settings.events_exchange
        self._broker = broker
        self._in_flight = in_flight
        self._clock = clock
        self.beat = ReplicaBeat(
            replica=socket.gethostname(),
            version=__version__,
            capacity=settings.concurrency,
            started_at=clock(),
            interval_seconds=settings.replica_heartbeat_seconds,
        )
        self._handed_over = threading.Event()  # a heartbeat waits for the connection's thread
        self._stopped = False  # connection thread only: the stopping message went out
        self._stop_ticking = threading.Event()
        self.announced = threading.Event()  # the stopping message went out (or is off)
        if not self.enabled:
            self.announced.set()

    @property
    def enabled(self) -> bool:
        return bool(self._exchange)

    def run(self, stop: threading.Event) -> None:
        """Hand a heartbeat to the connection's thread every interval until `stop` or stopping."""
        if not self.enabled:
            return
        interval = self.beat.interval_seconds
        while not self._stop_ticking.is_set() and not stop.is_set():
            self.tick()
            self._stop_ticking.wait(interval)

    def tick(self) -> None:
        """Hand one heartbeat to the connection's thread, unless it is down or one waits."""
        if not self.enabled or self._stop_ticking.is_set() or not self._broker.connected.is_set():
            return
        if not self._handed_over.is_set():
            self._handed_over.set()
            self._broker.submit(self._heartbeat)

    def stopping(self) -> None:
        """Send the stopping message (once) and no heartbeat after it; safe from any thread."""
        if not self.enabled or self._stop_ticking.is_set():
            return
        self._stop_ticking.set()
        self._broker.submit(self._announce_stopping)

    # --- on the connection's thread --------------------------------------------------------

    def _heartbeat(self) -> None:
        self._handed_over.clear()
        if self._stopped:
            return
        try:
            self._publish("heartbeat")
        except BrokerUnavailable as exc:
            log.info("heartbeat skipped: %s", exc)  # the next one goes out on time, or not

    def _announce_stopping(self) -> None:
        # Marked first: should the publish fail, the work is run again on the next connection,
        # and a heartbeat handed over meanwhile must still not follow it.
        self._stopped = True
        self._publish("stopping")
        self.announced.set()
        log.info("stopping announced to %s", self._exchange)

    def _publish(self, event: str) -> None:
        body = self.beat.body(event, in_flight=self._in_flight(), at=self._clock())
        self._broker.publish_event(
            self._exchange,
            routing_key(event, self.beat.replica),
            body,
            message_type=HEARTBEAT_TYPE,
            persistent=False,
        )
