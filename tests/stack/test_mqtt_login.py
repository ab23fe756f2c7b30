"""The local stack's MQTT listener takes the stack's broker user and refuses anonymous clients
(RabbitMQ's plugin would otherwise log them in as its default user, an administrator)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from tests.support.mqtt_login import connack
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack


def test_the_stacks_mqtt_wants_a_login(stack: StackInfo) -> None:
    url = urlsplit(stack.amqp_url)
    port = int(stack.env["MSTC_MQTT_PORT"])
    login = (unquote(url.username or ""), unquote(url.password or ""))
    assert not connack("127.0.0.1", port, login).is_failure
    assert connack("127.0.0.1", port, None).is_failure
