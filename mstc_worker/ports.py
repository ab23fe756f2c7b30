"""The service's collaborators as it sees them: the broker, the worker pool and the HTTP port.

Owns the shapes the service depends on, so that it can be given the real adapters
(`broker.Broker`, `pool.WorkerPool`, `http.HttpServer`, wired up in `__main__`) or in-memory
ones that a unit test drives step by step. Nothing here imports a third-party library; what a
consumed message is lives lower down, in `delivery`, so the broker adapter needs nothing of
the service's messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mstc_worker.delivery import BrokerUnavailable, Delivery, DeliveryHandler, ReplyHandler
from mstc_worker.messages import PoolMessage, ServiceToWorker

__all__ = [
    "BrokerPort",
    "BrokerUnavailable",
    "Delivery",
    "DeliveryHandler",
    "HttpEndpoints",
    "HttpFactory",
    "HttpPort",
    "PoolPort",
    "ReplyHandler",
]


class BrokerPort(Protocol):
    """A consuming and publishing connection whose owner thread is the one in `run`.

    Everything but `submit` (and reading `connected`) is called on that thread only.
    """

    @property
    def connected(self) -> threading.Event: ...

    @property
    def paused(self) -> bool: ...

    def run(
        self, stop: threading.Event, on_delivery: DeliveryHandler, on_control: DeliveryHandler
    ) -> None:
        """Consume requests into `on_delivery`, control messages into `on_control`, and run
        submitted work until `stop` is set."""

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work` on the owner thread, soon; safe from any thread."""

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        correlation_id: str | None,
        headers: Mapping[str, Any] | None = None,
        message_type: str | None = None,
        fallback: bool = True,
    ) -> None:
        """Publish with a confirm; BrokerUnavailable if it could not be."""

    def publish_event(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_type: str,
        message_id: str | None = None,
        persistent: bool = True,
    ) -> None:
        """Publish to a (topic) exchange with a confirm; unrouted is not an error.

        Events are persistent and carry their id; heartbeats are neither. BrokerUnavailable
        if it could not be published.
        """

    def call(self, queue: str, body: bytes, *, correlation_id: str, on_reply: ReplyHandler) -> None:
        """Publish a request whose reply comes back to `on_reply` (None: it will not come).

        The reply queue is the connection's own; BrokerUnavailable if it could not be sent.
        """

    def republish(self, delivery: Delivery, *, headers: Mapping[str, Any]) -> None:
        """Put `delivery` back at the end of the work queue with `headers`, then ack it.

        Confirmed before the ack; unlike a requeue it does not mark the message redelivered.
        BrokerUnavailable if it could not be published (the delivery is then unsettled).
        """

    def holds(self, delivery: Delivery) -> bool:
        """Whether `delivery` is still this connection's to settle (once its channel closed,
        the broker requeued it and will deliver it again)."""
        ...

    def ack(self, delivery: Delivery) -> None: ...

    def nack(self, delivery: Delivery, *, requeue: bool) -> None: ...

    def pause(self) -> None:
        """Stop taking new deliveries; idempotent."""

    def resume(self) -> None: ...


class PoolPort(Protocol):
    """The worker processes of one replica, addressed by index (0..size-1).

    The process under an index is replaced when it dies; each one started is an incarnation,
    numbered per index, and `WorkerDied` names the incarnation that died.
    """

    @property
    def size(self) -> int: ...

    def start(self) -> None: ...

    def send(self, index: int, message: ServiceToWorker) -> int:
        """Put `message` in process `index`'s inbox; the incarnation that inbox belongs to."""

    def all_alive(self) -> bool: ...

    def messages(self) -> Iterator[PoolMessage]:
        """What the processes say, plus a `WorkerDied` for each restarted one."""

    def stop(self) -> None: ...


@dataclass(frozen=True)
class HttpEndpoints:
    """What the HTTP port asks the service: liveness, readiness, and the REST execute call."""

    is_live: Callable[[], bool]
    is_ready: Callable[[], bool]
    execute: Callable[[bytes], tuple[int, str]]


class HttpPort(Protocol):
    """The HTTP port: started before the broker, stopped after it."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


HttpFactory = Callable[[HttpEndpoints], HttpPort]
"""Makes the HTTP port around the service's endpoints (the service exists first)."""
