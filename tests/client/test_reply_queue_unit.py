"""The fixed reply queue's rules, on a recording stand-in for pika's connection (no server).

A fixed name (`ClientConfig.reply_queue_name`) is declared durable without x-expires and kept on
close; the default private queue still expires and is deleted. The real broker's side is
tests/client/test_reply_queue.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from mstc_client import ClientConfig
from mstc_client.broker import BrokerLink


class RecordingChannel:
    def __init__(self) -> None:
        self.declared: dict[str, Any] = {}
        self.deleted: list[str] = []

    def confirm_delivery(self) -> None: ...
    def exchange_declare(self, *_args: Any, **_kwargs: Any) -> None: ...
    def queue_bind(self, *_args: Any, **_kwargs: Any) -> None: ...
    def basic_consume(self, *_args: Any, **_kwargs: Any) -> None: ...

    def queue_declare(self, queue: str, durable: bool = False, arguments: Any = None) -> Any:
        self.declared[queue] = {"durable": durable, "arguments": arguments}
        return SimpleNamespace(method=SimpleNamespace(message_count=0))

    def queue_delete(self, queue: str) -> None:
        self.deleted.append(queue)


class RecordingConnection:
    def __init__(self) -> None:
        self.channel_ = RecordingChannel()
        self.is_open = True

    def channel(self) -> RecordingChannel:
        return self.channel_

    def process_data_events(self, time_limit: float = 0) -> None: ...
    def add_callback_threadsafe(self, callback: Any) -> None: ...

    def close(self) -> None:
        self.is_open = False


def _link(**fields: Any) -> tuple[BrokerLink, RecordingChannel]:
    config = ClientConfig(amqp_url="amqp://g:g@h:1/%2F", s3_endpoint="h:2", s3_access_key="a",
                          s3_secret_key="b", declare_topology=False, **fields)  # fmt: skip
    connection = RecordingConnection()
    link = BrokerLink(config, lambda: connection)
    link.start()
    return link, connection.channel_


def test_a_fixed_reply_queue_is_durable_never_expires_and_survives_close() -> None:
    link, channel = _link(reply_queue_name="mstc.flow.replies")
    assert link.reply_queue == "mstc.flow.replies"
    link.close()
    assert channel.declared["mstc.flow.replies"] == {"durable": True, "arguments": None}
    assert channel.deleted == []


def test_the_default_reply_queue_expires_and_is_deleted_on_close() -> None:
    link, channel = _link()
    link.close()
    declared = channel.declared[link.reply_queue]
    assert link.reply_queue.startswith("mstc.reply.")
    assert declared["arguments"] == {"x-expires": 3600 * 1000}
    assert channel.deleted == [link.reply_queue]


def test_a_reply_without_a_handle_is_acked_and_dropped() -> None:
    link, _channel = _link(reply_queue_name="mstc.flow.replies")
    acked: list[int] = []
    channel = SimpleNamespace(basic_ack=acked.append)
    props = SimpleNamespace(type=None, correlation_id="flow:" + "0" * 32)
    link._on_reply(channel, SimpleNamespace(delivery_tag=7), props, b'{"result": "x"}')
    link.close()
    assert acked == [7]
