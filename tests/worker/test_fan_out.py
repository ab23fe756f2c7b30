"""Fan-out end to end: one request runs many pods of one Job, on the real stack.

The local stack's controller-manager runs the real Job controller (parallelism, Indexed
completion, per-index retries); KWOK plays the pods as their annotations say. A watch on
the test's namespace sees every pod's phases, so the most pods active at once is measured,
not assumed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from minio import Minio

from tests.support.s3 import read_object
from tests.support.worker import AmqpClient, WorkerProcess

pytestmark = pytest.mark.stack

_TERMINAL = ("Succeeded", "Failed")
_INDEX = "batch.kubernetes.io/job-completion-index"


def request(bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "image": "example.invalid/job:1",
        "jobName": "fan-out",
        "inputBucket": bucket,
        "prefix": "run-1",
        **extra,
    }


class PodTally:
    """Every pod of a namespace from now on: its phase, its index, the most active at once."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self._core = k8s.CoreV1Api(api_client)
        self._namespace = namespace
        self._lock = threading.Condition()
        self.phases: dict[str, str] = {}
        self.indexes: dict[str, int] = {}
        self.max_active = 0
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        # Watching from the list's resourceVersion: no pod event after this point is missed.
        start = self._core.list_namespaced_pod(namespace).metadata.resource_version
        self._thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        self._thread.start()

    def _run(self, resource_version: str) -> None:
        try:
            self._follow(resource_version)
        except Exception:
            # The namespace and the connection go at teardown; only an earlier end is an error.
            if not self._stopped.is_set():
                raise

    def _follow(self, resource_version: str) -> None:
        stream = self._watch.stream(
            self._core.list_namespaced_pod,
            self._namespace,
            resource_version=resource_version,
            timeout_seconds=300,
        )
        for event in stream:
            pod = event["object"]
            with self._lock:
                name = pod.metadata.name
                if event["type"] != "DELETED":
                    self.phases[name] = pod.status.phase or "Pending"
                annotations = pod.metadata.annotations or {}
                if _INDEX in annotations:
                    self.indexes[name] = int(annotations[_INDEX])
                active = sum(phase not in _TERMINAL for phase in self.phases.values())
                self.max_active = max(self.max_active, active)
                self._lock.notify_all()

    def wait_terminal(self, count: int, timeout: float = 60) -> None:
        """Until `count` pods have ended (the watch may trail the worker's reply a little)."""
        with self._lock:
            ended = self._lock.wait_for(
                lambda: sum(p in _TERMINAL for p in self.phases.values()) >= count, timeout
            )
        assert ended, f"only {self.phases} seen"

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()


@pytest.fixture
def pod_tally(api_client: k8s.ApiClient, namespace: str) -> Iterator[PodTally]:
    tally = PodTally(api_client, namespace)
    yield tally
    tally.stop()


def test_indexed_fan_out_runs_every_index_at_most_parallelism_at_once(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    pod_tally: PodTally, minio: Minio,
) -> None:  # fmt: skip
    tally = pod_tally
    fields = {"completions": 20, "parallelism": 5, "completionMode": "Indexed"}
    cid = client.send(request(bucket, **fields), queue=work_queue)
    reply = client.wait(cid, timeout=180)
    tally.wait_terminal(20)
    print(f"\nfan-out 20/5 Indexed: {len(tally.phases)} pods, at most {tally.max_active} active")
    assert reply["status"] == "succeeded"
    assert (reply["podsSucceeded"], reply["podsFailed"]) == (20, 0)
    assert sorted(tally.indexes.values()) == list(range(20))
    assert set(tally.phases.values()) == {"Succeeded"}
    assert 1 < tally.max_active <= 5
    # The stored log: every pod's log, under a header, in index order.
    text = read_object(minio, reply["logBucket"], reply["logObject"]).decode()
    headers = re.findall(r"^===== pod \S+ index (\d+): Succeeded, exit code 0 =====$", text, re.M)
    assert [int(index) for index in headers] == list(range(20))
    assert text.count("SUCCESS") == 20  # each KWOK pod's log once


def test_a_fan_out_where_some_indexes_fail_reports_the_counts(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    fate = {"mstc.test/exit-code-1": "2", "mstc.test/exit-code-4": "3"}
    fields = {"completions": 6, "parallelism": 3, "completionMode": "Indexed"}
    cid = client.send(request(bucket, annotations=fate, **fields), queue=work_queue)
    reply = client.wait(cid, timeout=120)
    print(f"\nfan-out 6/3 with indexes 1 and 4 failing: {reply}")
    assert reply["status"] == "failed"
    # Per-index retries (backoffLimitPerIndex 0): the failures stop no other index.
    assert (reply["podsSucceeded"], reply["podsFailed"]) == (4, 2)
    # The reply reports the lowest failed index's pod: its exit code and container reason.
    assert (reply["exitCode"], reply["reason"]) == (2, "Error")
    assert reply["result"] == f"Job {reply['jobName']} complete."


def test_a_single_pod_job_reports_its_one_pod(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    reply = client.wait(client.send(request(bucket), queue=work_queue))
    assert reply["status"] == "succeeded"
    assert (reply["podsSucceeded"], reply["podsFailed"]) == (1, 0)
