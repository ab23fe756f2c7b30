"""The chart's mstc-flow part, rendered: off by default; its store, catalog RBAC, tokens, probes.

`helm template` on the stack's helm (and `--dry-run=server` where the API server must answer);
the install itself is tests/deploy/test_install_flow.py. The rendered environment is also
handed to the flow's own `load_settings`, so a variable the chart spells wrong fails here.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from mstc_flow.settings import load_settings
from tests.deploy.conftest import CHART, find, helm, kubectl, render, set_args
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

FLOW = "t-mstc-flow"
TOKENS = "t-mstc-flow-tokens"
ON = {"mstc-flow.enabled": "true"}
DATABASE_URL = "postgresql+psycopg://flow:pw-1@db.example:5432/flow"
POSTGRESQL = {**ON, "mstc-flow.replicas": "3", "mstc-flow.store.postgresql.url": DATABASE_URL}
INLINE_CATALOG = {**ON, "mstc-flow.catalog.inline": "entries: []"}
BUNDLED_POSTGRESQL = {
    **ON,
    "mstc-flow.replicas": "2",
    "mstc-flow.mstc-flow-postgresql.enabled": "true",
}
VALUE_SETS = {
    "sqlite": ON,
    "postgresql": POSTGRESQL,
    "bundled-postgresql": BUNDLED_POSTGRESQL,
    "configmap-catalog": INLINE_CATALOG,
}


def flow_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(find(objects, "Deployment", FLOW)["spec"]["template"]["spec"])


def flow_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = flow_pod(objects)["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def ref(env: dict[str, Any], name: str) -> tuple[str, str]:
    secret = env[name]["secretKeyRef"]
    return secret["name"], secret["key"]


def flow_objects(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "flow"
        or "mstc-flow" in o["metadata"]["name"]
    ]


def refused(stack: StackInfo, values: dict[str, str]) -> str:
    out = helm(stack, "template", "t", str(CHART), *set_args(values), check=False)
    assert out.returncode != 0, "rendered, but should have been refused"
    return out.stderr


def test_flow_is_off_by_default_and_renders_nothing(stack: StackInfo) -> None:
    assert flow_objects(render(stack, {})) == []


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict_with_flow_on(stack: StackInfo, values: dict[str, str]) -> None:
    out = helm(stack, "lint", "--strict", str(CHART), *set_args(values))
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_flow_objects_are_accepted_by_the_api_server(
    stack: StackInfo, namespace: str, values: dict[str, str]
) -> None:
    objects = render(stack, values, namespace=namespace)
    manifest = yaml.safe_dump_all(objects)
    out = kubectl(stack, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=manifest)
    accepted = [line for line in out.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(objects), out.stdout + out.stderr


def test_sqlite_store_is_a_claim_mounted_at_data_with_one_replica(stack: StackInfo) -> None:
    values = {**ON, "mstc-flow.store.sqlite.persistence.size": "7Gi",
              "mstc-flow.store.sqlite.persistence.storageClass": "fast"}  # fmt: skip
    objects = render(stack, values)
    claim = find(objects, "PersistentVolumeClaim", FLOW)
    assert claim["spec"]["resources"]["requests"]["storage"] == "7Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    deployment = find(objects, "Deployment", FLOW)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one writer at a time
    pod = flow_pod(objects)
    (container,) = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"] == {"claimName": FLOW}
    env = flow_env(objects)
    assert env["MSTC_FLOW_STORE_PATH"] == "/data/mstc-flow.sqlite3"
    assert "MSTC_FLOW_STORE_URL" not in env


def test_more_than_one_replica_with_sqlite_is_refused(stack: StackInfo) -> None:
    message = refused(stack, {**ON, "mstc-flow.replicas": "2"})
    assert "mstc-flow.replicas=2 needs PostgreSQL" in message
    assert "SQLite is one file on one volume" in message


def test_postgresql_url_is_a_secret_and_allows_replicas(stack: StackInfo) -> None:
    objects = render(stack, POSTGRESQL)
    store = find(objects, "Secret", f"{FLOW}-store")
    assert base64.b64decode(store["data"]["url"]).decode() == DATABASE_URL
    env = flow_env(objects)
    assert ref(env, "MSTC_FLOW_STORE_URL") == (f"{FLOW}-store", "url")
    assert "MSTC_FLOW_STORE_PATH" not in env
    deployment = find(objects, "Deployment", FLOW)
    assert deployment["spec"]["replicas"] == 3
    assert "strategy" not in deployment["spec"]  # rolling: replicas share the database
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim" and "flow" in str(o)]
    (container,) = flow_pod(objects)["containers"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


def test_postgresql_url_from_an_existing_secret(stack: StackInfo) -> None:
    values = {**ON, "mstc-flow.store.postgresql.existingSecret": "my-db",
              "mstc-flow.store.postgresql.existingSecretKey": "dsn"}  # fmt: skip
    objects = render(stack, values)
    assert ref(flow_env(objects), "MSTC_FLOW_STORE_URL") == ("my-db", "dsn")
    assert ("Secret", f"{FLOW}-store") not in flow_objects(objects)


def test_bundled_postgresql_is_a_non_root_statefulset_whose_url_the_flow_reads(
    stack: StackInfo,
) -> None:
    objects = render(stack, BUNDLED_POSTGRESQL)
    name = "t-mstc-flow-postgresql"
    secret = {
        k: base64.b64decode(v).decode() for k, v in find(objects, "Secret", name)["data"].items()
    }
    assert len(secret["password"]) == 32
    assert secret["url"] == (
        f"postgresql+psycopg://mstc_flow:{secret['password']}@{name}:5432/mstc_flow"
    )
    assert ref(flow_env(objects), "MSTC_FLOW_STORE_URL") == (name, "url")
    assert find(objects, "Deployment", FLOW)["spec"]["replicas"] == 2
    assert find(objects, "Service", name)["spec"]["ports"][0]["port"] == 5432
    database = find(objects, "StatefulSet", name)["spec"]
    assert database["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    pod = database["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert ref(env, "POSTGRES_PASSWORD") == (name, "password")
    assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    # No flow claim: the flow's pod keeps nothing on disk.
    assert ("PersistentVolumeClaim", FLOW) not in flow_objects(objects)


def test_configmap_catalog_is_readable_by_the_flow_alone_and_only_that_one(
    stack: StackInfo,
) -> None:
    objects = render(stack, {**INLINE_CATALOG, "mstc-flow.catalog.format": "csv"})
    catalog = find(objects, "ConfigMap", f"{FLOW}-catalog")
    assert catalog["data"] == {"catalog.csv": "entries: []\n"}
    role = find(objects, "Role", f"{FLOW}-catalog-reader")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [f"{FLOW}-catalog"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = find(objects, "RoleBinding", f"{FLOW}-catalog-reader")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FLOW, "namespace": "mstc-dev"}
    ]
    assert binding["roleRef"]["name"] == f"{FLOW}-catalog-reader"
    pod = flow_pod(objects)
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (FLOW, True)
    catalog_setting = flow_env(objects)["MSTC_FLOW_CATALOG"]
    assert catalog_setting == f"configmap:mstc-dev/{FLOW}-catalog/catalog.csv"


def test_an_existing_configmap_is_the_only_one_the_role_names(stack: StackInfo) -> None:
    values = {**ON, "mstc-flow.catalog.existingConfigMap": "jobs",
              "mstc-flow.catalog.existingConfigMapKey": "jobs.csv"}  # fmt: skip
    objects = render(stack, values)
    assert find(objects, "Role", f"{FLOW}-catalog-reader")["rules"][0]["resourceNames"] == ["jobs"]
    assert not [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "jobs"]
    assert flow_env(objects)["MSTC_FLOW_CATALOG"] == "configmap:mstc-dev/jobs/jobs.csv"


@pytest.mark.parametrize(
    ("values", "catalog"),
    [({}, ""), ({"mstc-flow.catalog.s3Url": "s3://mstc/catalog.yaml"}, "s3://mstc/catalog.yaml")],
    ids=["no-catalog", "s3"],
)
def test_without_a_configmap_catalog_no_role_and_no_api_token(
    stack: StackInfo, values: dict[str, str], catalog: str
) -> None:
    objects = render(stack, {**ON, **values})
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding") and "flow" in str(o)]
    assert find(objects, "ServiceAccount", FLOW)["automountServiceAccountToken"] is False
    assert flow_pod(objects)["automountServiceAccountToken"] is False
    assert flow_env(objects)["MSTC_FLOW_CATALOG"] == catalog


def test_two_catalog_sources_are_refused(stack: StackInfo) -> None:
    message = refused(stack, {**INLINE_CATALOG, "mstc-flow.catalog.s3Url": "s3://b/c.yaml"})
    assert "set at most one catalog source; got catalog.inline, catalog.s3Url" in message


def test_tokens_are_generated_into_a_secret_and_reach_the_pod_only_by_reference(
    stack: StackInfo,
) -> None:
    first, second = render(stack, POSTGRESQL), render(stack, ON)
    data = find(first, "Secret", TOKENS)["data"]
    tokens = {key: base64.b64decode(data[key]).decode() for key in ("readToken", "adminToken")}
    assert all(len(token) == 40 and token.isalnum() for token in tokens.values())
    assert tokens["readToken"] != tokens["adminToken"]
    assert find(second, "Secret", TOKENS)["data"] != data  # nothing installed: fresh ones
    env = flow_env(first)
    assert ref(env, "MSTC_FLOW_READ_TOKEN") == (TOKENS, "readToken")
    assert ref(env, "MSTC_FLOW_ADMIN_TOKEN") == (TOKENS, "adminToken")
    # No secret is an env literal: tokens, the database URL, broker and MinIO keys.
    literals = [value for value in env.values() if isinstance(value, str)]
    secrets = [*tokens.values(), "pw-1"]
    assert not [value for value in literals for secret in secrets if secret in value]
    assert ref(env, "WORK_QUEUE_PASS") == ("t-mstc-work-queue", "password")
    # The clients' MinIO key (S3 data calls only), not MinIO's root key.
    assert ref(env, "MSTC_S3_ACCESS_KEY") == ("t-mstc-cloud-worker-minio-client", "accessKey")
    assert ref(env, "MSTC_S3_SECRET_KEY") == ("t-mstc-cloud-worker-minio-client", "secretKey")
    assert "MINIO_ROOT_PASSWORD" not in env


def test_an_existing_token_secret_is_used_and_none_is_made(stack: StackInfo) -> None:
    objects = render(stack, {**ON, "mstc-flow.auth.existingSecret": "my-tokens"})
    assert ref(flow_env(objects), "MSTC_FLOW_ADMIN_TOKEN") == ("my-tokens", "adminToken")
    assert ("Secret", TOKENS) not in flow_objects(objects)


def test_an_upgrade_keeps_the_tokens_already_installed(stack: StackInfo, namespace: str) -> None:
    kubectl(stack, "-n", namespace, "create", "secret", "generic", TOKENS,
            "--from-literal=readToken=read-token-in-use-already",
            "--from-literal=adminToken=admin-token-in-use-already")  # fmt: skip
    # --dry-run=server lets the templates' `lookup` read the cluster, as install and upgrade do.
    out = helm(stack, "template", "t", str(CHART), "-n", namespace, "--dry-run=server",
               *set_args(ON))  # fmt: skip
    data = find([d for d in yaml.safe_load_all(out.stdout) if d], "Secret", TOKENS)["data"]
    assert base64.b64decode(data["readToken"]) == b"read-token-in-use-already"
    assert base64.b64decode(data["adminToken"]) == b"admin-token-in-use-already"


def test_an_upgrade_keeps_the_bundled_database_password(stack: StackInfo, namespace: str) -> None:
    name = "t-mstc-flow-postgresql"
    kubectl(stack, "-n", namespace, "create", "secret", "generic", name,
            "--from-literal=password=db-password-in-use")  # fmt: skip
    out = helm(stack, "template", "t", str(CHART), "-n", namespace, "--dry-run=server",
               *set_args(BUNDLED_POSTGRESQL))  # fmt: skip
    data = find([d for d in yaml.safe_load_all(out.stdout) if d], "Secret", name)["data"]
    assert base64.b64decode(data["password"]) == b"db-password-in-use"
    assert b":db-password-in-use@" in base64.b64decode(data["url"])


def test_probes_port_and_security_context(stack: StackInfo) -> None:
    objects = render(stack, ON)
    pod = flow_pod(objects)
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8090}]
    assert flow_env(objects)["MSTC_FLOW_HTTP_PORT"] == "8090"
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes == {
        "livenessProbe": {"path": "/healthz", "port": "http"},
        "readinessProbe": {"path": "/readyz", "port": "http"},
    }
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001
    service = find(objects, "Service", FLOW)
    assert service["spec"]["ports"] == [{"name": "http", "port": 8090, "targetPort": "http"}]
    assert (
        service["spec"]["selector"]
        == find(objects, "Deployment", FLOW)["spec"]["selector"]["matchLabels"]
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"clientUser.enabled": "false"}, "mstc-flow.connection.minio.secretName is required"),
        ({"mstc-work-queue.fullnameOverride": "rabbit"}, "mstc-flow.connection.workQueue.host"),
        ({"minio.fullnameOverride": "minio"}, "mstc-flow.connection.minio.host is required"),
        ({"fullnameOverride": "w"}, "this release's clients' key is in \"w-minio-client\""),
        ({"mstc-flow.flow.submitAttempts": "0"}, "submitAttempts"),
        ({"mstc-flow.unknownKey": "1"}, "unknownKey"),
    ],
)
def test_flow_values_that_cannot_work_are_refused(
    stack: StackInfo, values: dict[str, str], message: str
) -> None:
    assert message in refused(stack, {**ON, **values})


def test_the_settings_the_chart_renders_are_ones_the_flow_accepts(stack: StackInfo) -> None:
    env = flow_env(render(stack, INLINE_CATALOG))
    plain = {name: value for name, value in env.items() if isinstance(value, str)}
    settings = load_settings(
        {
            **plain,
            # What the Secrets and the downward API give the pod at run time.
            "WORK_QUEUE_USER": "user",
            "WORK_QUEUE_PASS": "a-password",
            "MSTC_S3_ACCESS_KEY": "mstc-client",
            "MSTC_S3_SECRET_KEY": "a-client-secret",
            "MSTC_FLOW_READ_TOKEN": "r" * 40,
            "MSTC_FLOW_ADMIN_TOKEN": "a" * 40,
            "MSTC_FLOW_REPLICA": "t-mstc-flow-abc",
        }
    )
    assert settings.http_port == 8090
    assert settings.database_url == "sqlite:////data/mstc-flow.sqlite3"
    assert settings.catalog == f"configmap:mstc-dev/{FLOW}-catalog/catalog.yaml"
    assert settings.submit_attempts == 5
    assert settings.client.amqp_url == "amqp://user:a-password@t-mstc-work-queue:5672/%2F"
    assert settings.client.s3_endpoint == "t-minio:9000"
    assert settings.client.s3_access_key == "mstc-client"


def test_notes_say_how_to_read_the_tokens_and_reach_the_api(
    stack: StackInfo, namespace: str
) -> None:
    out = helm(stack, "install", "t", str(CHART), "-n", namespace, "--dry-run=server",
               *set_args(ON))  # fmt: skip
    notes = out.stdout.split("NOTES:", 1)[1]
    for key in ("readToken", "adminToken"):
        assert f"kubectl -n {namespace} get secret {TOKENS} -o jsonpath='{{.data.{key}}}'" in notes
    assert f"kubectl -n {namespace} port-forward svc/{FLOW} 8090:8090" in notes
    assert 'curl -H "Authorization: Bearer $READ_TOKEN" http://127.0.0.1:8090/api/v1/jobs' in notes
    off = helm(stack, "install", "t", str(CHART), "-n", namespace, "--dry-run=server")
    assert "mstc-flow" not in off.stdout.split("NOTES:", 1)[1]
