"""Subscribers of the worker's lifecycle events, for stack tests: over MQTT and over AMQP.

`MqttEvents` is what an outside user runs: a real MQTT client (paho) through RabbitMQ's MQTT
plugin, with topic filters. `EventTap` is a durable AMQP queue bound to the events exchange,
which outlives a broker restart and a worker kill, and counts exactly: a marker published
behind the events arrives after them (a queue is first in, first out), so a count needs no
waiting "long enough".
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import pika
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.stack import StackInfo

Event = tuple[str, dict[str, Any]]  # (topic or routing key, body)


class MqttEvents:
    """An MQTT client subscribed to `filters` (QoS 1), collecting what arrives."""

    def __init__(self, stack: StackInfo, filters: list[str]) -> None:
        url = urlsplit(stack.amqp_url)
        self.received: list[Event] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"test-{uuid.uuid4().hex[:8]}")  # fmt: skip
        self._client.username_pw_set(unquote(url.username or ""), unquote(url.password or ""))
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        self._client.connect("127.0.0.1", int(stack.env["MSTC_MQTT_PORT"]))
        self._client.loop_start()
        result, _mid = self._client.subscribe([(f, 1) for f in filters])
        assert result == mqtt.MQTT_ERR_SUCCESS, result
        assert self._subscribed.wait(30), "the MQTT subscription was never acknowledged"

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append((message.topic, json.loads(message.payload)))
            self._changed.notify_all()

    def wait_for(self, done: Callable[[list[Event]], bool], timeout: float = 120) -> list[Event]:
        """Until `done(received)`; what was received then."""
        with self._changed:
            if not self._changed.wait_for(lambda: done(self.received), timeout):
                raise AssertionError(f"events never complete: {self.received}")
            return list(self.received)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class EventTap:
    """A durable queue bound to the events exchange with `binding`; counts exactly."""

    def __init__(self, stack: StackInfo, binding: str = "mstc.job.final.#") -> None:
        self._url = stack.amqp_url
        self.queue = f"test.events.{uuid.uuid4().hex[:12]}"
        self.received: list[Event] = []
        self._binding = binding
        self._connect()

    def _connect(self) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(self._url))
        self.channel = self.conn.channel()
        self.channel.queue_declare(self.queue, durable=True)
        self.channel.queue_bind(self.queue, "amq.topic", routing_key=self._binding)

    def reconnect(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._connect()
                return
            except pika.exceptions.AMQPConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the broker is still starting; nothing to wait on but time

    def drain(self, timeout: float = 30) -> list[Event]:
        """Everything in the queue so far (read up to a marker published behind it)."""
        marker = f"marker-{uuid.uuid4()}"
        self.channel.basic_publish("", self.queue, b"{}", pika.BasicProperties(message_id=marker))
        for method, props, body in self.channel.consume(self.queue, inactivity_timeout=timeout):
            if method is None:
                raise AssertionError(f"the marker never came back in {timeout} s")
            self.channel.basic_ack(method.delivery_tag)
            if props.message_id == marker:
                break
            self.received.append((method.routing_key, json.loads(body)))
        self.channel.cancel()
        return list(self.received)

    def finals_of(self, requested_name: str) -> list[dict[str, Any]]:
        return [body for _key, body in self.drain() if body.get("requestedName") == requested_name]

    def close(self) -> None:
        try:
            self.channel.queue_delete(self.queue)
            self.conn.close()
        except pika.exceptions.AMQPError:
            pass  # the broker went away with the test; its queue is the stack's to drop
