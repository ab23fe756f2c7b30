"""The stack's real node: pods run as real containers in images built on this machine.

Selected with ``-m real_node`` and run only when the stack was started with
``MSTC_STACK_REAL_NODE=1`` (``make test-real-node``); skipped otherwise, saying so. Checks:
a pod on the node runs a command in the locally built Debian image to Completed and the API
server's log of it (kubectl logs, through the kubelet) is what the command printed; an image
the node lacks fails fast with ErrImageNeverPull, since nothing is ever pulled; and only pods
that tolerate the node's taint land on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from kubernetes import client as k8s

from tests.support.kube import watch_until
from tests.support.realnode import real_node_pod, terminated, waiting_reason, why_not
from tests.support.stack import StackInfo

pytestmark = [
    pytest.mark.real_node,
    pytest.mark.skipif(why_not() is not None, reason=why_not() or ""),
]


@pytest.fixture
def core(stack: StackInfo, api_client: k8s.ApiClient) -> k8s.CoreV1Api:
    if reason := why_not(stack):
        pytest.skip(reason)
    return k8s.CoreV1Api(api_client)


@pytest.fixture
def ns(core: k8s.CoreV1Api, namespace: str) -> str:
    """The test's namespace once its default ServiceAccount exists (pods are refused before)."""
    watch_until(
        core.list_namespaced_service_account,
        lambda _t, sa: sa.metadata.name == "default",
        namespace=namespace,
    )
    return namespace


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


def test_a_pod_runs_a_locally_built_image_to_completed_and_its_log_is_served(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    printed = "hello from a real container"
    pod = real_node_pod(
        stack.env["MSTC_REAL_NODE_BASE_IMAGE"],
        ["sh", "-c", f"echo '{printed}'; . /etc/os-release; echo \"$ID $VERSION_CODENAME\""],
    )
    core.create_namespaced_pod(ns, pod)
    done = wait_pod(
        core, ns, pod.metadata.name, lambda p: p.status.phase in ("Succeeded", "Failed")
    )

    assert done.spec.node_name == stack.env["MSTC_REAL_NODE"]
    assert done.status.phase == "Succeeded", done.status
    state = terminated(done)
    assert state is not None
    assert (state.exit_code, state.reason) == (0, "Completed")
    # An address from the node's own bridge network, whose gateway is the node's address.
    subnet = ipaddress.ip_network(f"{stack.env['MSTC_REAL_NODE_HOST_IP']}/24", strict=False)
    assert ipaddress.ip_address(done.status.pod_ip) in subnet
    logs = stack.run(stack.env["KUBECTL_BIN"], "logs", "-n", ns, pod.metadata.name).stdout
    assert logs.splitlines() == [printed, "debian bookworm"]


def test_an_image_the_node_lacks_fails_fast_with_err_image_never_pull(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    pod = real_node_pod("mstc.local/not-built-here:1", ["true"])
    core.create_namespaced_pod(ns, pod)
    # ContainerCreating comes first, while the sandbox starts; the image's verdict follows.
    waiting = wait_pod(
        core,
        ns,
        pod.metadata.name,
        lambda p: waiting_reason(p) not in (None, "ContainerCreating"),
        timeout=30,
    )
    assert waiting.spec.node_name == stack.env["MSTC_REAL_NODE"]
    assert waiting_reason(waiting) == "ErrImageNeverPull"


def test_a_pod_that_does_not_tolerate_the_taint_never_lands_on_the_real_node(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    # It selects the node's label but lacks the toleration: the scheduler must refuse it.
    pod = real_node_pod(stack.env["MSTC_REAL_NODE_BASE_IMAGE"], ["true"], tolerate=False)
    core.create_namespaced_pod(ns, pod)
    unschedulable = wait_pod(
        core,
        ns,
        pod.metadata.name,
        lambda p: any(
            c.type == "PodScheduled" and c.reason == "Unschedulable"
            for c in (p.status.conditions or [])
        ),
        timeout=30,
    )
    assert not unschedulable.spec.node_name
    message = next(c.message for c in unschedulable.status.conditions if c.type == "PodScheduled")
    assert "1 node(s) had untolerated taint(s)" in message
    node = core.read_node(stack.env["MSTC_REAL_NODE"])
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
        ("mstc.io/real-node", "true", "NoSchedule")
    ]
