"""The bare loop: the least a client can do to run the worker's Job, the bench's baseline.

It creates the Job the worker would build for the same request and watches it to Complete,
with nothing else: no broker, no claim, no credentials, no log, no reply. It is kept as lean
as a client can be so that the baseline is not slowed by its own client: raw JSON in and out
(no model objects) and one watch for all its Jobs. Its own CPU time is returned with its
latencies, since it shares the machine with the stack it measures.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from bench.ends import watched_events
from bench.namespaces import Namespaces
from mstc_worker import manifest
from mstc_worker.manifest import ReplyRoute
from mstc_worker.protocol import parse_request
from mstc_worker.settings import load_settings


@dataclass(frozen=True)
class BareResult:
    latencies: list[float]  # create to Complete, per Job
    wall_s: float
    client_cpu_s: float  # the bare loop's own CPU time


class BareLoop:
    """Runs Jobs the bare way, each call in a namespace of its own."""

    def __init__(self, api: k8s.ApiClient, env: dict[str, str], job_ttl_seconds: int,
                 namespaces: Namespaces) -> None:  # fmt: skip
        self._batch = k8s.BatchV1Api(api)
        self._env, self._ttl, self._namespaces = env, job_ttl_seconds, namespaces

    def run(self, request: dict[str, Any], count: int, *, together: bool) -> BareResult:
        """`count` Jobs for `request`: all at once, or each after the one before completed."""
        ns = self._namespaces.make()
        created: dict[str, float] = {}
        done: dict[str, float] = {}
        finished = threading.Event()
        changed = threading.Condition()
        listed = self._batch.list_namespaced_job(ns, _preload_content=False)
        version = json.loads(listed.data)["metadata"]["resourceVersion"]

        def watcher() -> None:
            response = self._batch.list_namespaced_job(
                ns, watch=True, resource_version=version, _preload_content=False
            )
            for event in watched_events(response):
                job = event["object"]
                name = job["metadata"]["name"]
                if job.get("status", {}).get("succeeded") and name not in done:
                    with changed:
                        done[name] = time.monotonic()
                        changed.notify_all()
                    if len(done) == count:
                        finished.set()
                        response.close()
                        return

        jobs = self.jobs(request, count, ns)
        threading.Thread(target=watcher, daemon=True).start()
        cpu_before = time.process_time()
        start = time.monotonic()
        for job in jobs:
            name = job["metadata"]["name"]
            created[name] = time.monotonic()
            _drain(self._batch.create_namespaced_job(ns, job, _preload_content=False))
            if not together:
                with changed:
                    changed.wait_for(functools.partial(done.__contains__, name), timeout=600)
        finished.wait(timeout=1800)
        wall = time.monotonic() - start
        cpu = round(time.process_time() - cpu_before, 1)
        self._namespaces.drop(ns)
        return BareResult([done[k] - created[k] for k in created if k in done], wall, cpu)

    def jobs(self, request: dict[str, Any], count: int, namespace: str) -> list[dict[str, Any]]:
        """The Job the worker builds for the same request, less what only the worker uses.

        Same labels, annotations, env and template, so both ways move objects of the same
        size through the API server, etcd and the controllers (a smaller bare Job would
        make every write, status update and watch event of the bare loop cheaper). The
        finalizer is left out: nothing in the bare loop would remove it.
        """
        settings = load_settings({**self._env, "MSTC_NAMESPACE": namespace,
                                  "MSTC_JOB_TTL_SECONDS": str(self._ttl),
                                  "MSTC_ALLOW_DEFAULT_CREDENTIALS": "true"})  # fmt: skip
        parsed = parse_request(json.dumps(request).encode(), settings=settings)
        jobs = []
        for _ in range(count):
            request_id = str(uuid.uuid4())
            route = ReplyRoute("amq.gen-bench", request_id)
            job = manifest.build_job(parsed, request_id=request_id, settings=settings, route=route)
            job["metadata"]["finalizers"] = []
            job["spec"].pop("suspend", None)  # nothing in the bare loop would resume it
            jobs.append(job)
        return jobs


def _drain(response: Any) -> None:
    """Read a raw response to its end and give its connection back to the pool."""
    response.read()
    response.release_conn()
