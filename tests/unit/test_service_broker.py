"""The broker adapter's seam: it opens its connection through the factory it is given.

Only what can be seen without a server; the adapter's work against RabbitMQ itself is
tested against the real one in tests/worker and tests/faults.
"""

from __future__ import annotations

import pika
import pytest

from mstc_worker.broker import Broker, BrokerUnavailable
from tests.unit.conftest import MakeSettings


def test_the_broker_connects_through_the_factory_it_is_given(make_settings: MakeSettings) -> None:
    settings = make_settings(
        MSTC_AMQP_URL="amqp://u:p@rabbit.example:5679/%2F", MSTC_HEARTBEAT_SECONDS="20"
    )
    asked: list[pika.URLParameters] = []

    def refuse(params: pika.URLParameters) -> pika.BlockingConnection:
        asked.append(params)
        raise OSError("refused by the test")

    broker = Broker(settings, prefetch=3, connection_factory=refuse)
    with pytest.raises(BrokerUnavailable, match="refused by the test"):
        broker.connect()

    [params] = asked
    assert (params.host, params.port, params.heartbeat) == ("rabbit.example", 5679, 20)
    assert params.blocked_connection_timeout == 60
    assert params.client_properties == {"connection_name": "mstc-worker"}
    assert not broker.connected.is_set()
