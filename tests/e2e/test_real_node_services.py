"""Services on the stack's real node: kube-proxy's rules and CoreDNS, for real containers.

Selected with ``-m real_node`` and run only on a stack started with ``MSTC_STACK_REAL_NODE=1``
(``make test-real-node``); skipped otherwise, saying so. Checks: a pod resolves a Service by
its short name to the Service's ClusterIP and gets an answer from the pod behind it (CoreDNS
on the node, kube-proxy's nftables rules); a pod reaches the API server as in-cluster clients
do, by ``kubernetes.default.svc`` with its ServiceAccount's token and CA (the relay and the
``kubernetes`` EndpointSlice the node sets up).
"""

from __future__ import annotations

import json
import uuid

import pytest
from kubernetes import client as k8s

from tests.support.realnode import real_node_pod, terminated, wait_pod, why_not
from tests.support.stack import StackInfo

pytestmark = [
    pytest.mark.real_node,
    pytest.mark.skipif(why_not() is not None, reason=why_not() or ""),
]

# Prints what the name resolves to, then what a GET of the URL returns (the SA's CA trusted).
CLIENT = """
import socket, ssl, sys, urllib.request
host, url = sys.argv[1], sys.argv[2]
print(socket.gethostbyname(host))
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + open(sa + "/token").read()})
print(urllib.request.urlopen(req, timeout=20, context=ctx).read().decode().strip())
"""

SERVE = "exec python3 -m http.server 8080 --directory /tmp/www"


def ready(pod: k8s.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def run_client(stack: StackInfo, core: k8s.CoreV1Api, ns: str, host: str, url: str) -> list[str]:
    """The client's output lines, once it has run to Succeeded on the real node."""
    pod = real_node_pod(stack.env["MSTC_REAL_NODE_JOB_IMAGE"], ["python3", "-c", CLIENT, host, url])
    core.create_namespaced_pod(ns, pod)
    done = wait_pod(
        core, ns, pod.metadata.name, lambda p: p.status.phase in ("Succeeded", "Failed")
    )
    logs = stack.run(stack.env["KUBECTL_BIN"], "logs", "-n", ns, pod.metadata.name).stdout
    assert done.spec.node_name == stack.env["MSTC_REAL_NODE"]
    state = terminated(done)
    assert state is not None
    assert state.exit_code == 0, logs
    return logs.splitlines()


def test_a_pod_reaches_a_service_by_its_name_through_the_pod_behind_it(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    token = uuid.uuid4().hex
    server = real_node_pod(
        stack.env["MSTC_REAL_NODE_JOB_IMAGE"],
        ["sh", "-c", f"mkdir /tmp/www && echo {token} > /tmp/www/token && {SERVE}"],
        name="web-0",
    )
    server.metadata.labels = {"app": "web"}
    server.spec.restart_policy = "Always"
    server.spec.containers[0].readiness_probe = k8s.V1Probe(
        tcp_socket=k8s.V1TCPSocketAction(port=8080), period_seconds=1
    )
    core.create_namespaced_pod(ns, server)
    service = core.create_namespaced_service(
        ns,
        k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name="web"),
            spec=k8s.V1ServiceSpec(
                selector={"app": "web"},
                ports=[k8s.V1ServicePort(port=80, target_port=8080)],
            ),
        ),
    )
    wait_pod(core, ns, "web-0", ready)

    # http:// here: the client's CA and token go unused.
    lines = run_client(stack, core, ns, "web", "http://web/token")
    assert lines == [service.spec.cluster_ip, token]


def test_a_pod_reaches_the_api_server_as_in_cluster_clients_do(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    name = "kubernetes.default.svc"
    # /api: discovery, which the API server serves to authenticated users only (the token).
    lines = run_client(stack, core, ns, name, f"https://{name}/api")
    assert lines[0] == "10.96.0.1"
    assert json.loads("".join(lines[1:]))["kind"] == "APIVersions"
