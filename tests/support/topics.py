"""A test's own listener on a topic exchange (amq.topic): what the worker published, in order.

A server-named queue bound to the keys a test names, read with pika on the test's thread; each
message is kept with the monotonic time it arrived. `barrier` publishes a marker behind
everything already routed to the queue and returns what came before it, so a test can say
"nothing more arrived" without sleeping. `publish` sends a message as the worker would.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
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
    """Consumes on a thread of its own (so arrival times are true), publishes from the test's."""

    def __init__(self, stack: StackInfo, *keys: str, exchange: str = EXCHANGE) -> None:
        self.exchange = exchange
        self._url = stack.amqp_url
        self._barrier_key = f"test.barrier.{uuid.uuid4().hex}"
        self._arrivals: queue.Queue[Heard] = queue.Queue()
        self._bound = threading.Event()
        self._stop = threading.Event()
        self._publisher: pika.BlockingConnection | None = None
        self._thread = threading.Thread(target=self._consume, args=(keys,), daemon=True)
        self._thread.start()
        assert self._bound.wait(30), "the listener could not bind its queue"
        self.heard: list[Heard] = []

    def _consume(self, keys: tuple[str, ...]) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self._url))
        channel = conn.channel()
        name = str(channel.queue_declare("", exclusive=True).method.queue)
        for key in (*keys, self._barrier_key):
            channel.queue_bind(name, self.exchange, routing_key=key)
        self._bound.set()
        for method, props, body in channel.consume(name, auto_ack=True, inactivity_timeout=0.2):
            if self._stop.is_set():
                break
            if method is not None:
                self._arrivals.put(Heard(time.monotonic(), method.routing_key, props.type,
                                         json.loads(body)))  # fmt: skip
        conn.close()

    def next(self, timeout: float) -> Heard | None:
        try:
            heard = self._arrivals.get(timeout=timeout)
        except queue.Empty:
            return None
        self.heard.append(heard)
        return heard

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
        last = [heard.body for heard in got[-3:]]
        raise AssertionError(f"nothing accepted within {timeout} s; heard {len(got)}, last {last}")

    def barrier(self, timeout: float = 30) -> list[Heard]:
        """What arrived before a marker published now (routed behind everything before it)."""
        marker = uuid.uuid4().hex
        self.publish(self._barrier_key, {"marker": marker})
        got = self.until(lambda heard: heard.body.get("marker") == marker, timeout)
        return got[:-1]

    def publish(self, routing_key: str, body: dict[str, Any], message_type: str = "x") -> None:
        if self._publisher is None or not self._publisher.is_open:
            self._publisher = pika.BlockingConnection(pika.URLParameters(self._url))
        props = pika.BasicProperties(content_type="application/json", type=message_type)
        self._publisher.channel().basic_publish(
            self.exchange, routing_key, json.dumps(body).encode(), props
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._publisher is not None and self._publisher.is_open:
            self._publisher.close()


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
