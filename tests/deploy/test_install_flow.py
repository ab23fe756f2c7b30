"""`helm install` with mstc-flow on, into the real API server (KWOK runs the pods).

The umbrella installs with the flow, its store's claim (SQLite's, or the bundled PostgreSQL's
with two flow replicas) bound to a volume made here (the stack has no provisioner), its catalog
ConfigMap and Role; `--wait` returns only once every Deployment and StatefulSet is ready and
the claim bound. The API server's SubjectAccessReview then says what
the flow's ServiceAccount may do: read its catalog ConfigMap, nothing else. An upgrade keeps
the tokens. No flow image runs here (KWOK simulates containers), so this checks the objects,
not the service.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.deploy.conftest import CHART, helm, set_args
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack


def _secret(core: k8s.CoreV1Api, name: str, namespace: str) -> dict[str, str]:
    data = core.read_namespaced_secret(name, namespace).data
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _may(
    api_client: k8s.ApiClient, namespace: str, account: str, verb: str, resource: str, name: str
) -> bool:
    """The API server's answer for `account` doing `verb` on the core `resource` named `name`."""
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{account}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
            resource_attributes=k8s.V1ResourceAttributes(
                namespace=namespace, verb=verb, group="", resource=resource, name=name
            ),
        )
    )
    result = k8s.AuthorizationV1Api(api_client).create_subject_access_review(review)
    return bool(result.status.allowed)


@pytest.fixture
def storage_class(api_client: k8s.ApiClient) -> Iterator[str]:
    """A volume for the flow's claim: a PersistentVolume of a class only this test uses."""
    name = f"flow-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(api_client)
    volume = k8s.V1PersistentVolume(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PersistentVolumeSpec(
            storage_class_name=name,
            capacity={"storage": "1Gi"},
            access_modes=["ReadWriteOnce"],
            host_path=k8s.V1HostPathVolumeSource(path=f"/tmp/{name}"),
        ),
    )
    core.create_persistent_volume(volume)
    yield name
    core.delete_persistent_volume(name)


RELEASE = "fl"
FLOW = f"{RELEASE}-mstc-flow"
# Per store: the values, the flow's replicas, and the claim that must be bound.
STORES = {
    "sqlite": (
        {"mstc-flow.store.sqlite.persistence.storageClass": "{class}",
         "mstc-flow.store.sqlite.persistence.size": "1Gi"},
        1,
        FLOW,
    ),
    "bundled-postgresql": (
        {"mstc-flow.replicas": "2",
         "mstc-flow.mstc-flow-postgresql.enabled": "true",
         "mstc-flow.mstc-flow-postgresql.persistence.storageClass": "{class}",
         "mstc-flow.mstc-flow-postgresql.persistence.size": "1Gi"},
        2,
        f"data-{RELEASE}-mstc-flow-postgresql-0",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("store", "replicas", "claim_name"), STORES.values(), ids=STORES.keys())
def test_install_with_flow_is_accepted_and_scoped(
    stack: StackInfo,
    api_client: k8s.ApiClient,
    namespace: str,
    storage_class: str,
    store: dict[str, str],
    replicas: int,
    claim_name: str,
) -> None:
    release, flow = RELEASE, FLOW
    values = {
        "serviceAccount.name": f"mstc-{uuid.uuid4().hex[:6]}",
        "mstc-flow.enabled": "true",
        "mstc-flow.catalog.inline": "entries: []",
        **{key: value.format(**{"class": storage_class}) for key, value in store.items()},
    }
    helm(stack, "install", release, str(CHART), "-n", namespace, *set_args(values),
         "--wait", "--timeout", "170s")  # fmt: skip
    try:
        apps, core = k8s.AppsV1Api(api_client), k8s.CoreV1Api(api_client)
        assert apps.read_namespaced_deployment(flow, namespace).status.ready_replicas == replicas
        claim = core.read_namespaced_persistent_volume_claim(claim_name, namespace)
        assert (claim.status.phase, claim.spec.volume_name) == ("Bound", storage_class)
        service = core.read_namespaced_service(flow, namespace)
        assert [(p.name, p.port) for p in service.spec.ports] == [("http", 8090)]
        tokens = _secret(core, f"{flow}-tokens", namespace)
        assert sorted(tokens) == ["adminToken", "readToken"]
        assert all(len(token) == 40 for token in tokens.values())
        catalog = core.read_namespaced_config_map(f"{flow}-catalog", namespace)
        assert catalog.data == {"catalog.yaml": "entries: []\n"}

        def may(verb: str, resource: str, name: str) -> bool:
            return _may(api_client, namespace, flow, verb, resource, name)

        for verb in ("get", "list", "watch"):
            assert may(verb, "configmaps", f"{flow}-catalog"), verb
        assert not may("get", "configmaps", f"{release}-mstc-work-queue-config")
        assert not may("list", "configmaps", "")  # every ConfigMap: no
        assert not may("update", "configmaps", f"{flow}-catalog")
        assert not may("get", "secrets", f"{flow}-tokens")
        assert not may("create", "pods", "")

        helm(stack, "upgrade", release, str(CHART), "-n", namespace, "--reuse-values",
             "--set", "mstc-flow.flow.submitAttempts=7", "--wait", "--timeout", "170s")  # fmt: skip
        assert _secret(core, f"{flow}-tokens", namespace) == tokens
    finally:
        helm(stack, "uninstall", release, "-n", namespace, "--wait", check=False)
