"""Pods for the stack's real node (stack/realnode.py), and why a test cannot use it.

The real node takes only pods that ask for it: they select its label and tolerate its taint
(both ``mstc.io/real-node``). Its images are built on this machine and imported into its
containerd, never pulled, so every pod here says ``imagePullPolicy: Never``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

from kubernetes import client as k8s

from tests.support.kube import watch_until
from tests.support.stack import StackInfo

REAL_NODE_KEY = "mstc.io/real-node"


def why_not(stack: StackInfo | None = None) -> str | None:
    """Why the real node's tests cannot run, or None when they can."""
    if os.environ.get("MSTC_STACK_REAL_NODE") != "1":
        return "real node tests: set MSTC_STACK_REAL_NODE=1 (`make test-real-node`)"
    if stack is not None and "MSTC_REAL_NODE" not in stack.env:
        return (
            "real node tests: the running stack has no real node "
            "(it was started without MSTC_STACK_REAL_NODE=1; `make stack-down` first)"
        )
    return None


def real_node_pod(
    image: str,
    command: list[str],
    *,
    name: str | None = None,
    tolerate: bool = True,
    select: bool = True,
) -> k8s.V1Pod:
    """A one-shot pod meant for the real node; `tolerate`/`select` drop one half of the ask."""
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name or f"real-{uuid.uuid4().hex[:8]}"),
        spec=k8s.V1PodSpec(
            restart_policy="Never",
            node_selector={REAL_NODE_KEY: "true"} if select else None,
            tolerations=(
                [
                    k8s.V1Toleration(
                        key=REAL_NODE_KEY, operator="Equal", value="true", effect="NoSchedule"
                    )
                ]
                if tolerate
                else None
            ),
            containers=[
                k8s.V1Container(
                    name="main", image=image, command=command, image_pull_policy="Never"
                )
            ],
        ),
    )


def waiting_reason(pod: k8s.V1Pod) -> str | None:
    for status in (pod.status and pod.status.container_statuses) or []:
        if status.state and status.state.waiting:
            return str(status.state.waiting.reason)
    return None


def terminated(pod: k8s.V1Pod) -> k8s.V1ContainerStateTerminated | None:
    for status in (pod.status and pod.status.container_statuses) or []:
        if status.state and status.state.terminated:
            return status.state.terminated
    return None


def wait_pod(
    core: k8s.CoreV1Api,
    ns: str,
    name: str,
    predicate: Callable[[k8s.V1Pod], bool],
    timeout: int = 120,
) -> k8s.V1Pod:
    """The pod once `predicate` holds for it, from a watch (no polling)."""
    pod: k8s.V1Pod = watch_until(
        core.list_namespaced_pod,
        lambda _t, pod: predicate(pod),
        timeout=timeout,
        namespace=ns,
        field_selector=f"metadata.name={name}",
    )
    return pod
