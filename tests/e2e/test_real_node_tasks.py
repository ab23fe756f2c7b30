"""A task queue drained by a Job's real pods on the real node, one of them killed mid-task.

The worker (on the host, task queues on) gets a request naming a task queue, with five pods
at once; its namespace is routed to the real node, so the pods are real containers of the
``tasks`` image (``examples/tasks/drain.py`` on the client), logging in to RabbitMQ with the
Job's own user through the node's AMQP relay. Each pod records what it did as objects in the
Job's output prefix (with the Job's own MinIO key): that is what the test counts. One task is
marked to be held; the test kills its pod's container with SIGKILL (``ctr tasks kill``, as the
kernel or an OOM kill would end it: no shutdown, the connection cut) while it holds the task,
and RabbitMQ must hand that task to another pod.

That the Job's login reaches its own task queue only (another task queue, the work queue and
the worker's exchange are refused with ACCESS_REFUSED) is shown with the very login the worker
puts in the Job's Secret by ``tests/worker/test_task_queues.py``; RabbitMQ enforces it the same
whichever machine the login comes from, so it is not repeated here.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from minio import Minio

import localstack
import realnode
import realnode_files
from mstc_client.tasks import TaskQueue
from realnode_files import NAMESPACE_ANNOTATIONS
from tests.support.realnode import terminated, wait_pod, why_not
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.test_service import wait_released
from tests.worker.test_task_queues import management, tasks_settings, user_path

pytestmark = [
    pytest.mark.real_node,
    pytest.mark.skipif(why_not() is not None, reason=why_not() or ""),
]

TASKS = 200
HELD = 10  # the task whose pod is killed: early, so the other pods still have work
PODS = 5


def holding_pod(s3: Minio, bucket: str, prefix: str) -> tuple[int, str]:
    """(task id, pod) of the first <prefix>/holding/<id>/<pod> a pod writes. Listed again and
    again: MinIO's bucket notifications would be the event to await, but minio-py's reader
    of that stream buffers it and hands events over only once more have followed."""
    deadline = time.monotonic() + 240
    while not (found := steps(s3, bucket, prefix, "holding")):
        assert time.monotonic() < deadline, "no pod took the task to hold within 240 s"
        time.sleep(0.5)
    return found[0]


def running(pod: k8s.V1Pod) -> bool:
    """Whether the pod's container runs (its id is then known)."""
    statuses = pod.status.container_statuses or []
    return bool(statuses and statuses[0].state.running and statuses[0].container_id)


def steps(s3: Minio, bucket: str, prefix: str, step: str) -> list[tuple[int, str]]:
    """(task id, pod) of every `step` object the pods wrote: <prefix>/<step>/<id>/<pod>."""
    found = []
    for obj in s3.list_objects(bucket, prefix=f"{prefix}/{step}/", recursive=True):
        task, pod = str(obj.object_name).split("/")[-2:]
        found.append((int(task), pod))
    return found


def route_namespace_to_real_node(core: k8s.CoreV1Api, ns: str, stack: StackInfo) -> None:
    core.patch_namespace(ns, {"metadata": {"annotations": NAMESPACE_ANNOTATIONS}})
    user, password = stack.s3_keys
    core.create_namespaced_secret(
        ns,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="mstc-minio"),
            string_data={"rootUser": user, "rootPassword": password},
        ),
    )


def kill_container(pod: k8s.V1Pod) -> None:
    """SIGKILL to the container's main process, from the node's containerd (the pod stays;
    its container ends with 137 and the Job controller counts the pod failed)."""
    container_id = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
    lay = realnode_files.Layout(localstack.Config.from_env())
    realnode.ctr(lay, "tasks", "kill", "--signal=SIGKILL", container_id)


def test_200_tasks_drained_by_5_real_pods_one_killed_mid_task(
    stack: StackInfo, api_client: k8s.ApiClient, core: k8s.CoreV1Api, ns: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    route_namespace_to_real_node(core, ns, stack)
    user, password = stack.s3_keys
    s3 = Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)
    bucket, prefix = f"tasks-{uuid.uuid4().hex[:10]}", "run-1"
    s3.make_bucket(bucket)
    name = f"drain-{uuid.uuid4().hex[:8]}"
    # Filled first, with the stack's administrator login: the pods find all the tasks ready.
    with TaskQueue(stack.env["MSTC_AMQP_URL"], name) as tasks:
        for n in range(TASKS):
            tasks.put({"id": n, "hold": True} if n == HELD else {"id": n})
        assert tasks.qsize() == TASKS

    queue_name = f"mstc.queue.work.tasks-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        stack,
        {
            "MSTC_NAMESPACE": ns,
            "MSTC_WORK_QUEUE": queue_name,
            "MSTC_RESULTS_QUEUE": f"{queue_name}.results",
            "MINIO_SERVICE_HOST": stack.env["MSTC_REAL_NODE_MINIO_HOST"],
            # The host the Job's task-queue URL names (the worker's own connection is
            # MSTC_AMQP_URL's, on 127.0.0.1): RabbitMQ through the node's relay.
            "WORK_QUEUE_HOST": stack.env["MSTC_REAL_NODE_AMQP_HOST"],
            **tasks_settings(stack),
        },
        tmp_path,
    )
    client = AmqpClient(stack)
    worker.start()
    try:
        request: dict[str, Any] = {
            "image": stack.env["MSTC_REAL_NODE_TASKS_IMAGE"],
            "jobName": "drain",
            "inputBucket": bucket,  # the output bucket too: the pods record their steps there
            "prefix": prefix,
            "timeOut": 10,
            "taskQueue": name,
            "completions": PODS,
            "parallelism": PODS,
            "backoffLimit": 1,  # the killed pod is replaced, and the Job does not fail
        }
        cid = client.send(request, queue=queue_name)
        held_task, victim = holding_pod(s3, bucket, prefix)
        assert held_task == HELD
        pod = wait_pod(core, ns, victim, running)
        job_name = pod.metadata.labels["job-name"]
        job_user = f"mstc.job.{ns}.{job_name}"
        assert management(stack, "GET", user_path(job_user)) == 200
        kill_container(pod)
        killed = terminated(wait_pod(core, ns, victim, lambda p: p.status.phase == "Failed"))
        assert killed is not None
        assert killed.exit_code == 137, killed
        reply = client.wait(cid, timeout=300)
        wait_released(api_client, ns, job_name)
    finally:
        client.close()
        worker.stop()
    elapsed = time.monotonic() - started

    pods = {p.metadata.name: p for p in core.list_namespaced_pod(ns).items}
    print(
        f"\nreply {reply['status']}: podsSucceeded {reply.get('podsSucceeded')}, podsFailed "
        f"{reply.get('podsFailed')}; pods {sorted((n, p.status.phase) for n, p in pods.items())}; "
        f"{elapsed:.1f} s"
    )
    assert reply["status"] == "succeeded", (reply, worker.log_text)
    assert (reply["podsSucceeded"], reply["podsFailed"]) == (PODS, 1)
    assert all(pods[p].spec.node_name == stack.env["MSTC_REAL_NODE"] for p in pods)

    processed = steps(s3, bucket, prefix, "processed")
    acked = steps(s3, bucket, prefix, "acked")
    # Every task acknowledged exactly once; the held one not by the killed pod.
    assert Counter(task for task, _ in acked) == Counter(range(TASKS))
    assert (HELD, victim) not in acked
    # Every task processed once, but the held one: by the killed pod, then by another.
    assert Counter(task for task, _ in processed) == Counter(range(TASKS)) + Counter([HELD])
    again = {pod_name for task, pod_name in processed if task == HELD} - {victim}
    assert len(again) == 1
    assert (HELD, again.pop()) in acked
    assert len({pod_name for _, pod_name in processed}) > 1  # shared, not drained by one pod

    with TaskQueue(stack.env["MSTC_AMQP_URL"], name) as tasks:
        assert tasks.qsize() == 0
        with pytest.raises(queue.Empty):
            tasks.get(block=False)  # nothing left, nothing held
    # The Job's RabbitMQ user went with the Job; the queue is the test's to remove.
    assert management(stack, "GET", user_path(job_user)) == 404
    assert management(stack, "DELETE", f"/api/queues/%2F/mstc.tasks.{name}") == 204
