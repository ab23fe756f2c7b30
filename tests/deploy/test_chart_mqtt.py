"""The bundled RabbitMQ's MQTT plugin: on by default, logins required, and off when asked.

Rendered here; tests/e2e/test_real_node_chart.py connects to it on the real node.
"""

from __future__ import annotations

import pytest

from tests.deploy.conftest import find, render
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

RABBIT = "t-mstc-work-queue"


def _parts(stack: StackInfo, values: dict[str, str]) -> tuple[str, str, list[str], list[str]]:
    objects = render(stack, values)
    config = find(objects, "ConfigMap", f"{RABBIT}-config")["data"]
    pod = find(objects, "Deployment", RABBIT)["spec"]["template"]["spec"]
    ports = [p["name"] for p in pod["containers"][0]["ports"]]
    service = [p["name"] for p in find(objects, "Service", RABBIT)["spec"]["ports"]]
    return config["rabbitmq.conf"], config["enabled_plugins"], ports, service


def test_mqtt_is_on_by_default_for_logged_in_clients_only(stack: StackInfo) -> None:
    conf, plugins, ports, service = _parts(stack, {})
    assert plugins.strip() == "[rabbitmq_management,rabbitmq_prometheus,rabbitmq_mqtt]."
    assert "mqtt.allow_anonymous = false" in conf.splitlines()
    assert "mqtt.exchange = amq.topic" in conf.splitlines()
    assert "mqtt" in ports
    assert "mqtt" in service


def test_mqtt_off_leaves_only_amqp_and_management(stack: StackInfo) -> None:
    conf, plugins, ports, service = _parts(stack, {"mstc-work-queue.mqtt.enabled": "false"})
    assert plugins.strip() == "[rabbitmq_management,rabbitmq_prometheus]."
    assert "mqtt" not in conf
    assert ports == ["amqp", "management"]
    assert service == ["amqp", "management"]


def test_the_plugins_file_is_mounted_where_rabbitmq_reads_it(stack: StackInfo) -> None:
    pod = find(render(stack, {}), "Deployment", RABBIT)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m.get("subPath") for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/etc/rabbitmq/enabled_plugins"] == "enabled_plugins"
