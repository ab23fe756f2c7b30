"""A consumed message as the worker sees it, apart from pika, and the broker's one failure.

Owns the two things both sides of the broker boundary name: the adapter (`broker`) makes
`Delivery` values from pika's and raises `BrokerUnavailable`; the service and its fakes read
and catch them. Kept below everything else so the adapter depends on nothing of the service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mstc_worker.errors import TransientError

__all__ = ["BrokerUnavailable", "Delivery", "DeliveryHandler", "ReplyHandler"]


class BrokerUnavailable(TransientError):
    """RabbitMQ could not be reached, or dropped the connection or channel."""


@dataclass(frozen=True)
class Delivery:
    """One consumed message, detached from pika's types."""

    tag: int
    generation: int  # which connection it came on; its tag means nothing on another
    body: bytes
    reply_to: str | None
    correlation_id: str | None
    message_id: str | None
    redelivered: bool
    headers: Mapping[str, Any] = field(default_factory=dict)


DeliveryHandler = Callable[[Delivery], None]

ReplyHandler = Callable[[bytes | None], bool]
"""Takes the reply to a request the worker published itself (None: it will not come here);
returns False if its caller has gone, and the reply then goes to the results queue."""
