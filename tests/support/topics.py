"""A test's own listener on a topic exchange (amq.topic): what the worker published, in order.

A server-named queue bound to the keys a test names, read with pika on the test's thread; each
message is kept with the monotonic time it arrived. `barrier` publishes a marker behind
everything already routed to the queue and returns what came before it, so a test can say
"nothing more arrived" without sleeping. `publish` sends a message as the worker would.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika

from tests.support.stack import StackInfo

EXCHANGE = "amq.topic"


@dataclass(frozen=True)
class Heard:
    """One message: when it arrived (time.monotonic()), its key, AMQP type and JSON body."""

    arrived: float
    routing_key: str
    message_type: str | None
    body: dict[str, Any]


class TopicListener:
    def __init__(self, stack: StackInfo, *keys: str, exchange: str = EXCHANGE) -> None:
        self.exchange = exchange
        self.conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
        self.channel = self.conn.channel()
        self.queue = str(self.channel.queue_declare("", exclusive=True).method.queue)
        self._barrier_key = f"test.barrier.{uuid.uuid4().hex}"
        for key in (*keys, self._barrier_key):
            self.channel.queue_bind(self.queue, exchange, routing_key=key)
        self.heard: list[Heard] = []

    def next(self, timeout: float) -> Heard | None:
        for method, props, body in self.channel.consume(
            self.queue, auto_ack=True, inactivity_timeout=timeout
        ):
            if method is None:
                return None
            heard = Heard(time.monotonic(), method.routing_key, props.type, json.loads(body))
            self.heard.append(heard)
            return heard
        return None

    def until(self, done: Callable[[Heard], bool], timeout: float = 30) -> list[Heard]:
        """Everything that arrives up to and including the first message `done` accepts."""
        deadline = time.monotonic() + timeout
        got: list[Heard] = []
        while (left := deadline - time.monotonic()) > 0:
            heard = self.next(left)
            if heard is None:
                break
            got.append(heard)
            if done(heard):
                return got
        raise AssertionError(f"nothing accepted within {timeout} s; heard {got}")

    def barrier(self, timeout: float = 30) -> list[Heard]:
        """What arrived before a marker published now (routed behind everything before it)."""
        marker = uuid.uuid4().hex
        self.publish(self._barrier_key, {"marker": marker})
        got = self.until(lambda heard: heard.body.get("marker") == marker, timeout)
        return got[:-1]

    def publish(self, routing_key: str, body: dict[str, Any], message_type: str = "x") -> None:
        props = pika.BasicProperties(content_type="application/json", type=message_type)
        self.channel.basic_publish(self.exchange, routing_key, json.dumps(body).encode(), props)

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


def wait_for_binding(stack: StackInfo, key: str, count: int = 1, timeout: float = 30) -> None:
    """Until `count` server-named queues are bound to amq.topic with `key` (a listener is up).

    Read from the management API: a subscriber in another process says nothing when it is
    ready, but its binding is visible to the broker's API at once.
    """
    user, password = stack.env["WORK_QUEUE_USER"], stack.env["WORK_QUEUE_PASS"]
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    exchange = urllib.parse.quote(EXCHANGE, safe="")
    url = (
        f"{stack.env['MSTC_RABBITMQ_MANAGEMENT_URL']}/api/exchanges/%2F/{exchange}/bindings/source"
    )
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(request, timeout=10) as resp:
            bindings = json.loads(resp.read())
        bound = [
            b for b in bindings
            if b["routing_key"] == key and b["destination"].startswith("amq.gen-")
        ]  # fmt: skip
        if len(bound) >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no listener bound {key!r} within {timeout} s: {bindings}")
        time.sleep(0.2)  # polling the broker's API: the other process cannot tell us
