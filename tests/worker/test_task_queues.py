"""Task queues of Jobs, end to end: the worker's per-Job RabbitMQ user, and draining a queue.

A real worker with task queues on (the stack's RabbitMQ management API, logged in as the
stack's administrator) gets requests naming a task queue. With the login the worker put in
the Job's Secret, a pod's code (here the test, or stand-in processes: KWOK's pods run no
code) may fill and drain its own queue and is refused everywhere else by RabbitMQ itself;
the user is gone once the worker lets the Job go.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from kubernetes import client as k8s

from mstc_client.errors import TaskQueueError
from mstc_client.tasks import TaskQueue
from mstc_worker.rabbit_admin import RabbitAdmin, RabbitAdminRejected, RabbitAdminUnavailable
from mstc_worker.settings import load_settings
from mstc_worker.task_queues import grant_for
from tests.support.kube import watch_until
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess, free_port
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request, wait_released

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]


def tasks_settings(stack: StackInfo) -> dict[str, str]:
    """Task queues on, managed as the stack's administrator (a user that may manage users)."""
    return {
        "MSTC_TASKS_MANAGEMENT_URL": stack.env["MSTC_RABBITMQ_MANAGEMENT_URL"],
        "MSTC_TASKS_ADMIN_USER": stack.env["WORK_QUEUE_USER"],
        "MSTC_TASKS_ADMIN_PASS": stack.env["WORK_QUEUE_PASS"],
    }


def management(stack: StackInfo, method: str, path: str, body: Any = None) -> int:
    """The HTTP status of one management API call, as the stack's administrator."""
    user, password = stack.env["WORK_QUEUE_USER"], stack.env["WORK_QUEUE_PASS"]
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(
        stack.env["MSTC_RABBITMQ_MANAGEMENT_URL"] + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def user_path(user: str) -> str:
    return f"/api/users/{urllib.parse.quote(user, safe='')}"


def job_with_secret(api_client: k8s.ApiClient, namespace: str) -> tuple[k8s.V1Job, dict[str, str]]:
    """The request's Job, and the data of the Secret the worker made for it (decoded)."""
    job = watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job, lambda *_: True, namespace=namespace
    )
    name = f"{job.metadata.name}-storage"
    secret = watch_until(
        k8s.CoreV1Api(api_client).list_namespaced_secret,
        lambda *_: True,
        namespace=namespace,
        field_selector=f"metadata.name={name}",
    )
    data = {key: base64.b64decode(value).decode() for key, value in secret.data.items()}
    return job, data


def pod_env(job: k8s.V1Job) -> dict[str, Any]:
    return {e.name: e for e in job.spec.template.spec.containers[0].env}


def refused_code(url: str, action: Any) -> int:
    """The reply code RabbitMQ closes the channel with when `action(channel)` runs as `url`."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
            action(channel)
        return int(caught.value.reply_code)
    finally:
        if connection.is_open:
            connection.close()


def test_a_jobs_login_reaches_its_task_queue_only_and_goes_with_the_job(
    make_worker: MakeWorker, stack: StackInfo, client: AmqpClient, bucket: str,
    api_client: k8s.ApiClient, namespace: str, work_queue: str,
) -> None:  # fmt: skip
    make_worker(**tasks_settings(stack))
    name = f"t-{uuid.uuid4().hex[:8]}"
    cid = client.send(request(bucket, taskQueue=name, **pod_fate(run_for="20s")), queue=work_queue)
    job, secret = job_with_secret(api_client, namespace)
    assert job.metadata.annotations["mstc.io/task-queue"] == name
    env = pod_env(job)
    assert env["MSTC_TASK_QUEUE"].value == name
    ref = env["MSTC_TASKS_URL"].value_from.secret_key_ref
    assert (ref.name, ref.key) == (f"{job.metadata.name}-storage", "tasksUrl")
    url = secret["tasksUrl"]
    user = f"mstc.job.{namespace}.{job.metadata.name}"
    assert urllib.parse.unquote(urllib.parse.urlsplit(url).username or "") == user
    assert stack.env["WORK_QUEUE_PASS"] not in url  # never the worker's own login

    # Its own queue: put, get, done.
    with TaskQueue.from_env({"MSTC_TASKS_URL": url, "MSTC_TASK_QUEUE": name}) as tasks:
        tasks.put({"id": 1})
        assert tasks.qsize() == 1
        assert tasks.get(timeout=10) == {"id": 1}
        tasks.task_done()
    # Another task queue: declaring it is refused.
    with pytest.raises(TaskQueueError) as other:
        TaskQueue(url, f"{name}-other")
    assert other.value.code == 403
    # The work queue: not readable, nor reachable through the default or the worker's exchange.
    assert refused_code(url, lambda ch: ch.basic_get(work_queue)) == 403
    assert refused_code(url, lambda ch: ch.basic_publish("", work_queue, b"{}")) == 403
    assert refused_code(url, lambda ch: ch.basic_publish("mstc.exchange", work_queue, b"{}")) == 403
    # (A passive declare is not refused: RabbitMQ checks no permission for it, so a pod can
    # learn whether a queue it can name exists and how many messages are ready in it.)

    assert management(stack, "GET", user_path(user)) == 200
    assert client.wait(cid)["status"] == "succeeded"
    wait_released(api_client, namespace, job.metadata.name)
    # Removed before the finalizer: once the Job is let go, the user is gone.
    assert management(stack, "GET", user_path(user)) == 404
    with pytest.raises(TaskQueueError) as gone:
        TaskQueue(url, name)
    assert gone.value.code == 403


def test_a_task_queue_request_is_rejected_when_task_queues_are_off(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    cid = client.send(request(bucket, taskQueue="q1"), queue=work_queue)
    reply = client.wait(cid)
    assert reply["status"] == "rejected"
    assert "MSTC_TASKS_MANAGEMENT_URL" in reply["result"]


def test_200_tasks_drained_by_5_processes_one_killed_mid_task(
    make_worker: MakeWorker, stack: StackInfo, client: AmqpClient, bucket: str,
    api_client: k8s.ApiClient, namespace: str, work_queue: str, tmp_path: Path,
) -> None:  # fmt: skip
    make_worker(**tasks_settings(stack))
    name = f"drain-{uuid.uuid4().hex[:8]}"
    client.send(request(bucket, taskQueue=name, **pod_fate(run_for="600s")), queue=work_queue)
    job, secret = job_with_secret(api_client, namespace)
    env = {"MSTC_TASKS_URL": secret["tasksUrl"], "MSTC_TASK_QUEUE": name}
    with TaskQueue.from_env(env) as tasks:
        for n in range(200):
            tasks.put({"id": n})
        assert tasks.qsize() == 200

    def start(index: int, *extra: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "tests.worker.task_consumer", str(tmp_path / f"{index}.log")]
        return subprocess.Popen(
            [*argv, *extra], cwd=ROOT, env={**os.environ, **env}, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip

    victim = start(0, "--hold-after", "10")
    assert victim.stdout is not None
    held = victim.stdout.readline().split()  # said while it holds a task, not done
    assert held[:1] == ["holding"], held
    # The others start once the victim holds its task: started together, they could drain
    # the queue before the victim took its eleventh (seen on a loaded machine).
    others = [start(index) for index in range(1, 5)]
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    for proc in others:
        assert proc.wait(timeout=120) == 0

    lines = [
        line.split() for path in tmp_path.glob("*.log") for line in path.read_text().splitlines()
    ]
    processed = Counter(int(task) for step, task in lines if step == "processed")
    acked = Counter(int(task) for step, task in lines if step == "acked")
    killed_task = int(held[1])
    assert acked == Counter(range(200))  # every task acknowledged exactly once
    # Every task processed once, but the killed one's: by it, then again by another.
    assert processed == Counter(range(200)) + Counter([killed_task])
    with TaskQueue.from_env(env) as tasks:
        assert tasks.qsize() == 0
        with pytest.raises(queue.Empty):
            tasks.get(block=False)  # nothing left, nothing held
    user = f"mstc.job.{namespace}.{job.metadata.name}"
    assert management(stack, "DELETE", user_path(user)) == 204  # the Job runs on; tidy up


def test_the_sweep_removes_users_whose_job_is_gone(
    make_worker: MakeWorker, stack: StackInfo, namespace: str
) -> None:
    """A user left behind (a worker killed between letting a Job go and removing its user)."""
    orphan = f"mstc.job.{namespace}.gone-{uuid.uuid4()}"
    elsewhere = f"mstc.job.other-{uuid.uuid4().hex[:8]}.job-1"  # another worker's namespace
    for user in (orphan, elsewhere):
        assert management(stack, "PUT", user_path(user), {"password": "x", "tags": ""}) in (
            201,
            204,
        )
    make_worker(**tasks_settings(stack))
    deadline = time.monotonic() + 60
    while management(stack, "GET", user_path(orphan)) != 404:
        assert time.monotonic() < deadline, f"{orphan} still there after 60 s"
        time.sleep(0.5)  # RabbitMQ announces no user removal: nothing to await but the sweep
    assert management(stack, "GET", user_path(elsewhere)) == 200
    assert management(stack, "DELETE", user_path(elsewhere)) == 204


def test_the_management_api_errors_are_the_workers_own(stack: StackInfo) -> None:
    """A wrong admin login is permanent (retrying fails alike); no server is transient."""
    settings = {**stack.env, **tasks_settings(stack)}
    admin = RabbitAdmin(load_settings(settings))
    assert admin.users("mstc.job.no-such-namespace.") == []
    wrong = RabbitAdmin(load_settings({**settings, "MSTC_TASKS_ADMIN_PASS": "wrong"}))
    with pytest.raises(RabbitAdminRejected, match="401"):
        wrong.grant("mstc.job.ns.j", "pw", grant_for("q1"))
    url = f"http://127.0.0.1:{free_port()}"
    absent = RabbitAdmin(load_settings({**settings, "MSTC_TASKS_MANAGEMENT_URL": url}))
    with pytest.raises(RabbitAdminUnavailable):
        absent.remove("mstc.job.ns.j")
