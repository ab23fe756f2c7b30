"""The umbrella chart installed on the stack's real node, and how the host reaches it.

`route_namespace` annotates ``mstc-dev`` so that every pod there (the release's and the
worker's Jobs) lands on the real node; `install` puts charts/mstc-cloud-worker into it with the
images built on this machine (``pullPolicy=Never``); `uninstall` and `unroute_namespace` undo
both. The host
reaches the release's Services at their ClusterIPs (the node routes the Service range), as a
user's client reaches them through a port-forward.
"""

from __future__ import annotations

import base64
import os
import subprocess
from dataclasses import dataclass

from kubernetes import client as k8s

from realnode_files import NAMESPACE_ANNOTATIONS
from tests.deploy.conftest import CHART
from tests.support.kube import wait_gone
from tests.support.stack import StackInfo

RELEASE, NAMESPACE = "mstc-cloud-worker", "mstc-dev"


@dataclass(frozen=True)
class Installed:
    """The chart's release on the real node."""

    stack: StackInfo
    core: k8s.CoreV1Api
    rabbit: str = f"{RELEASE}-mstc-work-queue"
    minio: str = f"{RELEASE}-minio"

    def secret(self, name: str, key: str) -> str:
        data = self.core.read_namespaced_secret(name, NAMESPACE).data
        return base64.b64decode(data[key]).decode()

    def cluster_ip(self, service: str) -> str:
        return str(self.core.read_namespaced_service(service, NAMESPACE).spec.cluster_ip)

    def client_env(self) -> dict[str, str]:
        """The settings `mstc` reads, pointing at the release's RabbitMQ and MinIO."""
        return {
            "WORK_QUEUE_HOST": self.cluster_ip(self.rabbit),
            "WORK_QUEUE_PORT": "5672",
            "WORK_QUEUE_USER": self.secret(self.rabbit, "username"),
            "WORK_QUEUE_PASS": self.secret(self.rabbit, "password"),
            "MINIO_SERVICE_HOST": self.cluster_ip(self.minio),
            "MINIO_SERVICE_PORT": "9000",
            "MINIO_ROOT_USER": self.secret(self.minio, "rootUser"),
            "MINIO_ROOT_PASSWORD": self.secret(self.minio, "rootPassword"),
        }

    def amqp_url(self) -> str:
        env = self.client_env()
        return (
            f"amqp://{env['WORK_QUEUE_USER']}:{env['WORK_QUEUE_PASS']}"
            f"@{env['WORK_QUEUE_HOST']}:5672/%2F"
        )

    def pods(self, name: str) -> list[k8s.V1Pod]:
        """The release's pods of one part (its app.kubernetes.io/name)."""
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name={name}"
        pods: list[k8s.V1Pod] = self.core.list_namespaced_pod(
            NAMESPACE, label_selector=selector
        ).items
        return pods


def image_values(stack: StackInfo) -> list[str]:
    """--set arguments: each part's image is the one built here, never pulled."""
    args = []
    for prefix, role in (("", "WORKER"), ("mstc-work-queue.", "RABBITMQ"), ("minio.", "MINIO")):
        repository, tag = stack.env[f"MSTC_REAL_NODE_{role}_IMAGE"].rsplit(":", 1)
        for key, value in (("repository", repository), ("tag", tag), ("pullPolicy", "Never")):
            args += ["--set", f"{prefix}image.{key}={value}"]
    return args


def helm(stack: StackInfo, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [stack.helm, *args],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pod_states(core: k8s.CoreV1Api) -> str:
    """Each pod of the namespace: node, phase, container states and its log's last lines."""
    lines = []
    for pod in core.list_namespaced_pod(NAMESPACE).items:
        states = [
            f"{s.name}: ready={s.ready} restarts={s.restart_count} "
            f"{(s.state.waiting and s.state.waiting.reason) or ''}"
            for s in pod.status.container_statuses or []
        ]
        lines.append(f"{pod.metadata.name} on {pod.spec.node_name}: {pod.status.phase} {states}")
        if not all(s.ready for s in pod.status.container_statuses or []):
            try:
                log = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, tail_lines=8)
            except k8s.ApiException as exc:
                log = f"(no log: {exc.reason})"
            lines.append(f"  {log}")
    return "\n".join(lines)


def route_namespace(core: k8s.CoreV1Api) -> bool:
    """mstc-dev with the annotations that put its pods on the real node; True if made here.

    A namespace left by other tests (the deploy tests' --create-namespace) is annotated
    instead, and `unroute_namespace` then takes the annotations off again.
    """
    try:
        core.create_namespace(
            k8s.V1Namespace(
                metadata=k8s.V1ObjectMeta(name=NAMESPACE, annotations=NAMESPACE_ANNOTATIONS)
            )
        )
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise
        core.patch_namespace(NAMESPACE, {"metadata": {"annotations": NAMESPACE_ANNOTATIONS}})
        return False
    return True


def unroute_namespace(core: k8s.CoreV1Api, *, created: bool) -> None:
    """The namespace deleted (and gone) if `route_namespace` made it, else its annotations off."""
    if not created:
        off = dict.fromkeys(NAMESPACE_ANNOTATIONS)
        core.patch_namespace(NAMESPACE, {"metadata": {"annotations": off}})
        return
    core.delete_namespace(NAMESPACE)
    wait_gone(core.list_namespace, field_selector=f"metadata.name={NAMESPACE}", timeout=180)


def install(stack: StackInfo, core: k8s.CoreV1Api, *values: str) -> Installed:
    """The chart in mstc-dev (routed to the real node), all its pods Ready.

    helm's wait stays inside pytest's 300 s per test, so a release that never gets Ready
    fails here, with its pods' states, rather than being cut off by the timeout plugin.
    """
    out = helm(
        stack, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
        *image_values(stack), *values, "--wait", "--timeout", "4m", timeout=270,
    )  # fmt: skip
    if out.returncode != 0:
        raise AssertionError(f"helm install failed: {out.stderr.strip()}\n{pod_states(core)}")
    return Installed(stack, core)


def uninstall(stack: StackInfo) -> None:
    """The release gone, its pods with it (helm waits for them)."""
    helm(stack, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", timeout=300)
