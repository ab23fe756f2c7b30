"""The chart renders, lints, and everything it renders is accepted by the real API server.

Also: the broker definitions it renders are imported by a real RabbitMQ and give the topology
the worker and Java-era clients rely on, and config/service-account.yaml grants the same rules.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml

from mstc_worker.settings import load_settings
from tests.deploy.conftest import CHART, ROOT, find, helm, kubectl, render, set_args
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

# Value sets beyond the defaults: each changes what the templates branch on.
PERSISTENCE_AND_RESOURCES = {
    "minio.persistence.enabled": "true",
    "minio.persistence.size": "20Gi",
    "minio.persistence.storageClass": "standard",
    "mstc-work-queue.persistence.enabled": "true",
    "mstc-work-queue.persistence.size": "5Gi",
    "resources.requests.cpu": "250m",
    "resources.limits.memory": "1Gi",
    "minio.resources.limits.memory": "2Gi",
    "mstc-work-queue.resources.requests.memory": "512Mi",
    "replicaCount": "2",
    "worker.concurrency": "4",
    "worker.processes": "3",
    "worker.logFormat": "text",
    "worker.imageAllow[0]": "registry.example/*",
    "worker.imageAllow[1]": "busybox:*",
    "serviceAccount.name": "mstc-custom",
    "mstc-work-queue.fullnameOverride": "mstc-work-queue",
    "minio.fullnameOverride": "minio",
    "global.queues.work": "custom.work",
    "podAnnotations.team": "mstc",
    "worker.requestLabelPrefixes[0]": "example.org/",
    "worker.requestLabelPrefixes[1]": "team-",
    "worker.requestAnnotationPrefixes[0]": "example.org/",
    "podSecurity.labelNamespace": "true",
    "podSecurity.enforce": "restricted",
}
EXTERNAL_SERVERS = {
    "mstc-work-queue.enabled": "false",
    "externalWorkQueue.host": "rabbit.example.internal",
    "externalWorkQueue.port": "5673",
    "externalWorkQueue.username": "worker",
    "externalWorkQueue.password": "not-a-default",
    "minio.enabled": "false",
    "externalMinio.host": "s3.example.internal",
    "externalMinio.existingSecret": "my-minio",
    "restApi.existingSecret": "my-rest-token",
}
EXTERNAL_BROKER_BY_SECRET = {
    "mstc-work-queue.enabled": "false",
    "externalWorkQueue.host": "rabbit.example.internal",
    "externalWorkQueue.existingSecret": "my-rabbit",
    "minio.auth.rootUser": "given-user",
    "minio.auth.rootPassword": "given-password-123",
    "restApi.enabled": "false",
}
VALUE_SETS = {
    "defaults": {},
    "persistence-and-resources": PERSISTENCE_AND_RESOURCES,
    "external-servers": EXTERNAL_SERVERS,
    "external-broker-by-secret": EXTERNAL_BROKER_BY_SECRET,
}


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict(stack: StackInfo, values: dict[str, str]) -> None:
    out = helm(stack, "lint", "--strict", str(CHART), *set_args(values))
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_is_accepted_by_the_api_server(
    stack: StackInfo, namespace: str, values: dict[str, str]
) -> None:
    objects = render(stack, values, namespace=namespace)
    manifest = yaml.safe_dump_all(objects)
    out = kubectl(stack, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=manifest)
    accepted = [line for line in out.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(objects), out.stdout + out.stderr


def test_defaults_render_the_three_parts(stack: StackInfo) -> None:
    objects = render(stack, {}, release="mstc-cloud-worker")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("Deployment", "mstc-cloud-worker"),
        ("Service", "mstc-cloud-worker"),
        ("Deployment", "mstc-cloud-worker-minio"),
        ("Service", "mstc-cloud-worker-minio"),
        ("Deployment", "mstc-cloud-worker-mstc-work-queue"),
        ("Service", "mstc-cloud-worker-mstc-work-queue"),
        ("ServiceAccount", "mstc"),
        ("Role", "mstc-cloud-worker-job-runner"),
        ("RoleBinding", "mstc-cloud-worker-job-runner"),
        ("ConfigMap", "mstc-cloud-worker-mstc-work-queue-config"),
    } <= kinds
    assert not any(o["kind"] == "PersistentVolumeClaim" for o in objects)
    worker = find(objects, "Deployment", "mstc-cloud-worker")
    pod = worker["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mstc"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"]
    env = env_of(worker)
    assert env["WORK_QUEUE_HOST"] == "mstc-cloud-worker-mstc-work-queue"
    assert env["WORK_QUEUE_PASS"] == {
        "secretKeyRef": {"name": "mstc-cloud-worker-mstc-work-queue", "key": "password"}
    }
    assert env["MINIO_SERVICE_HOST"] == "mstc-cloud-worker-minio"
    assert env["MINIO_SERVICE_PORT"] == "9000"
    # Jobs read the same Secret the worker and MinIO use.
    assert env["MSTC_MINIO_SECRET_NAME"] == "mstc-cloud-worker-minio"
    assert env["MINIO_ROOT_USER"]["secretKeyRef"]["name"] == "mstc-cloud-worker-minio"
    assert env["MSTC_NAMESPACE"] == "mstc-dev"
    assert env["MSTC_WORK_QUEUE"] == "mstc.queue.work"
    assert env["MSTC_ALLOW_DEFAULT_CREDENTIALS"] == "false"
    for name in ("mstc-cloud-worker-minio", "mstc-cloud-worker-mstc-work-queue"):
        (server,) = find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert server["livenessProbe"]
        assert server["readinessProbe"]
        assert server["securityContext"]["readOnlyRootFilesystem"] is True


def test_non_default_values_reach_the_objects(stack: StackInfo) -> None:
    objects = render(stack, PERSISTENCE_AND_RESOURCES)
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert claims["minio"]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claims["minio"]["spec"]["storageClassName"] == "standard"
    assert claims["mstc-work-queue"]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    worker = find(objects, "Deployment", "t-mstc-cloud-worker")
    assert worker["spec"]["replicas"] == 2
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] == "250m"
    assert worker["spec"]["template"]["metadata"]["annotations"]["team"] == "mstc"
    env = env_of(worker)
    assert env["MSTC_CONCURRENCY"] == "4"
    assert env["MSTC_PROCESSES"] == "3"
    assert env["MSTC_IMAGE_ALLOW"] == "registry.example/*,busybox:*"
    assert env["MSTC_REQUEST_LABEL_PREFIXES"] == "example.org/,team-"
    assert env["MSTC_REQUEST_ANNOTATION_PREFIXES"] == "example.org/"
    namespace = find(objects, "Namespace", "mstc-dev")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert env["WORK_QUEUE_HOST"] == "mstc-work-queue"
    assert env["MINIO_SERVICE_HOST"] == "minio"
    assert env["MSTC_WORK_QUEUE"] == "custom.work"
    binding = find(objects, "RoleBinding", "t-mstc-cloud-worker-job-runner")
    assert binding["subjects"][0]["name"] == "mstc-custom"
    # The broker's definitions follow the renamed queue, policy included.
    topology = _definitions(objects, "mstc-work-queue")
    assert {q["name"] for q in topology["queues"]} >= {"custom.work"}
    assert topology["policies"][0]["pattern"] == r"^custom\.work$"
    rabbit = find(objects, "Deployment", "mstc-work-queue")["spec"]["template"]["spec"]
    assert any("persistentVolumeClaim" in v for v in rabbit["volumes"])


def test_external_servers_need_no_sub_charts(stack: StackInfo) -> None:
    objects = render(stack, EXTERNAL_SERVERS)
    names = {o["metadata"]["name"] for o in objects}
    assert not any(n == "minio" or n.endswith(("-minio", "-mstc-work-queue")) for n in names)
    env = env_of(find(objects, "Deployment", "t-mstc-cloud-worker"))
    assert env["WORK_QUEUE_HOST"] == "rabbit.example.internal"
    assert env["WORK_QUEUE_PORT"] == "5673"
    assert env["WORK_QUEUE_USER"]["secretKeyRef"]["name"] == "t-mstc-cloud-worker-work-queue"
    assert env["MSTC_MINIO_SECRET_NAME"] == "my-minio"
    secret = find(objects, "Secret", "t-mstc-cloud-worker-work-queue")
    assert base64.b64decode(secret["data"]["password"]) == b"not-a-default"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker.concurrency": "0"}, "concurrency"),
        ({"worker.logFormat": "xml"}, "logFormat"),
        ({"unknownKey": "1"}, "unknownKey"),
        (
            {"mstc-work-queue.enabled": "false", "externalWorkQueue.existingSecret": "s"},
            "externalWorkQueue.host is required",
        ),
        (
            {"mstc-work-queue.enabled": "false", "externalWorkQueue.host": "h"},
            "externalWorkQueue.username (or existingSecret) is required",
        ),
        (
            {"minio.enabled": "false", "externalMinio.existingSecret": "s"},
            "externalMinio.host is required",
        ),
        ({"minio.enabled": "false"}, "externalMinio.rootUser (or existingSecret) is required"),
    ],
)
def test_bad_values_are_refused_with_a_reason(
    stack: StackInfo, values: dict[str, str], message: str
) -> None:
    out = helm(stack, "template", "t", str(CHART), *set_args(values), check=False)
    assert out.returncode != 0
    assert message in out.stderr


def test_generated_credentials_are_random_and_not_the_defaults(stack: StackInfo) -> None:
    first, second = render(stack, {}), render(stack, {})
    secrets = []
    for objects in (first, second):
        minio = find(objects, "Secret", "t-minio")["data"]
        rabbit = find(objects, "Secret", "t-mstc-work-queue")["data"]
        secrets.append((base64.b64decode(minio["rootPassword"]), rabbit["password"]))
        user = base64.b64decode(minio["rootUser"]).decode()
        assert user not in ("minioadmin", "guest")
        assert len(base64.b64decode(minio["rootPassword"])) == 32
    # Nothing installed, so nothing to keep: each render generates anew.
    assert secrets[0] != secrets[1]


def test_plain_manifest_grants_what_the_chart_grants(stack: StackInfo) -> None:
    plain = list(yaml.safe_load_all((ROOT / "config" / "service-account.yaml").read_text()))
    (plain_role,) = [doc for doc in plain if doc["kind"] == "Role"]
    (plain_sa,) = [doc for doc in plain if doc["kind"] == "ServiceAccount"]
    assert (plain_sa["metadata"]["name"], plain_sa["metadata"]["namespace"]) == ("mstc", "mstc-dev")
    chart_role = find(render(stack, {}), "Role", "t-mstc-cloud-worker-job-runner")
    assert plain_role["rules"] == chart_role["rules"]


# --- the broker definitions, imported by a real RabbitMQ ------------------------------------


def _definitions(objects: list[dict[str, Any]], secret: str) -> dict[str, Any]:
    """The one definitions file RabbitMQ imports at boot, from the broker's Secret."""
    data = find(objects, "Secret", secret)["data"]["definitions.json"]
    definitions: dict[str, Any] = json.loads(base64.b64decode(data))
    return definitions


def _management(stack: StackInfo, method: str, path: str, body: Any = None) -> int:
    user, password = stack.env["WORK_QUEUE_USER"], stack.env["WORK_QUEUE_PASS"]
    req = urllib.request.Request(
        stack.env["MSTC_RABBITMQ_MANAGEMENT_URL"] + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def _in_vhost(definitions: dict[str, Any], vhost: str) -> dict[str, Any]:
    """The chart's definitions moved from "/" to `vhost`: the shared broker's "/" stays as is."""
    moved: dict[str, Any] = {}
    for key, items in definitions.items():
        if key == "vhosts":
            moved[key] = [{"name": vhost}]
        else:
            moved[key] = [{**item, "vhost": vhost} if "vhost" in item else item for item in items]
    return moved


def test_rabbitmq_imports_the_definitions_and_dead_letters_rejected_requests(
    stack: StackInfo, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    user, password, vhost = f"defs-{tag}", f"pw-{uuid.uuid4().hex}", f"mstc-defs-{tag}"
    objects = render(
        stack, {"mstc-work-queue.auth.username": user, "mstc-work-queue.auth.password": password}
    )
    definitions = _in_vhost(_definitions(objects, "t-mstc-work-queue"), vhost)
    [topic] = definitions["topic_permissions"]  # the lifecycle events' exchange, spelled out
    assert (topic["user"], topic["exchange"], topic["write"], topic["read"]) == (
        user, "amq.topic", ".*", ".*",
    )  # fmt: skip
    assert _management(stack, "POST", "/api/definitions", definitions) in (200, 201, 204)
    quoted = urllib.parse.quote(vhost, safe="")
    try:
        host, port = stack.env["WORK_QUEUE_HOST"], int(stack.env["WORK_QUEUE_PORT"])
        # The user of the definitions logs in with the plain password of the Secret.
        params = pika.ConnectionParameters(host, port, vhost, pika.PlainCredentials(user, password))
        conn = pika.BlockingConnection(params)
        try:
            ch = conn.channel()
            # A Java-era client's re-declaration is accepted: same flags, no arguments.
            ch.queue_declare("mstc.queue.work", durable=True)
            ch.queue_declare("mstc.queue.results", durable=True, passive=True)
            ch.confirm_delivery()
            ch.basic_publish("mstc.exchange", "mstc.queue.work", b'{"x": 1}', mandatory=True)
            # The lifecycle events' exchange takes the user's events (confirmed).
            ch.basic_publish("amq.topic", "mstc.job.final.succeeded.x", b"{}")
            method, _props, body = ch.basic_get("mstc.queue.work")
            assert method is not None
            assert body == b'{"x": 1}'
            # Rejected without requeue: the policy's dead-letter exchange takes it.
            ch.basic_reject(method.delivery_tag, requeue=False)
            # Dead-lettering is asynchronous: wait for the delivery on the dead-letter queue.
            dead, props, body = next(
                ch.consume("mstc.queue.dead", auto_ack=True, inactivity_timeout=30)
            )
            ch.cancel()
            assert dead is not None, "the rejected request was not dead-lettered"
            assert body == b'{"x": 1}'
            assert props.headers["x-death"][0]["queue"] == "mstc.queue.work"
        finally:
            conn.close()
    finally:
        _management(stack, "DELETE", f"/api/vhosts/{quoted}")
        _management(stack, "DELETE", f"/api/users/{urllib.parse.quote(user, safe='')}")


def test_rabbitmq_conf_sets_the_consumer_timeout_and_the_definitions_file(stack: StackInfo) -> None:
    conf = find(
        render(stack, {"mstc-work-queue.consumerTimeoutMs": "600000"}),
        "ConfigMap",
        "t-mstc-work-queue-config",
    )
    lines = {
        key.strip(): value.strip()
        for key, _, value in (
            line.partition("=")
            for line in conf["data"]["rabbitmq.conf"].splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )
    }
    assert lines["consumer_timeout"] == "600000"
    assert lines["definitions.import_backend"] == "local_filesystem"
    rabbit = find(render(stack, {}), "Deployment", "t-mstc-work-queue")["spec"]["template"]["spec"]
    (container,) = rabbit["containers"]
    # One regular file, the Secret's definitions.json: RabbitMQ 3.10 reads this path as a
    # file only (a directory fails its boot with eisdir).
    (mount,) = [
        m for m in container["volumeMounts"] if m["mountPath"] == lines["definitions.local.path"]
    ]
    assert mount["subPath"] == "definitions.json"
    (volume,) = [v for v in rabbit["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "t-mstc-work-queue"


def test_by_default_requests_set_no_keys_and_the_namespace_is_left_alone(
    stack: StackInfo,
) -> None:
    objects = render(stack, {})
    env = env_of(find(objects, "Deployment", "t-mstc-cloud-worker"))
    # Empty settings are unset ones: the worker's default, no prefix at all.
    assert env["MSTC_REQUEST_LABEL_PREFIXES"] == ""
    assert env["MSTC_REQUEST_ANNOTATION_PREFIXES"] == ""
    assert [o for o in objects if o["kind"] == "Namespace"] == []


def test_the_settings_the_chart_renders_are_ones_the_worker_accepts(
    stack: StackInfo, tmp_path: Path
) -> None:
    # The worker reads these at start; a value it refuses (a number rendered as 1.048576e+06)
    # would keep every pod of a default install crash-looping.
    env = env_of(find(render(stack, {}), "Deployment", "t-mstc-cloud-worker"))
    plain = {name: value for name, value in env.items() if isinstance(value, str)}
    token = tmp_path / "token"
    token.write_text("a-token-of-more-than-16-characters")
    settings = load_settings(
        {
            **plain,
            # What the Secrets and the token mount give the pod at run time.
            "WORK_QUEUE_USER": "user",
            "WORK_QUEUE_PASS": "a-password",
            "MINIO_ROOT_USER": "minio-user",
            "MINIO_ROOT_PASSWORD": "a-minio-password",
            "MSTC_HTTP_TOKEN_FILE": str(token),
        }
    )
    assert settings.max_body_bytes == 1_048_576
    assert settings.concurrency == 100
