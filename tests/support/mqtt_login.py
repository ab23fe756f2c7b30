"""What an MQTT broker answers to a CONNECT, for the tests that the broker wants a login."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def connack(host: str, port: int, login: tuple[str, str] | None, timeout: float = 30) -> Any:
    """The CONNACK's reason code for a client with `login` (None: anonymous)."""
    answered = threading.Event()
    reasons: list[Any] = []

    def on_connect(_client: Any, _data: Any, _flags: Any, reason: Any, _props: Any) -> None:
        reasons.append(reason)
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"login-{uuid.uuid4().hex[:8]}")
    if login is not None:
        client.username_pw_set(*login)
    client.on_connect = on_connect
    client.connect(host, port)
    client.loop_start()
    try:
        assert answered.wait(timeout), f"no CONNACK from {host}:{port} within {timeout} s"
    finally:
        client.loop_stop()
        client.disconnect()
    return reasons[0]
