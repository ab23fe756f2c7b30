"""The bench's namespaces: every run gets a fresh one, and the next run starts when it is gone.

Deleting a namespace hands its leftovers (Jobs not yet taken by their TTL, pods, Events,
Secrets, service accounts) to the namespace controller, which deletes them one collection at
a time through the API server. Left to run in the background, that clean-up shared the
machine with the next run and made later runs slower than earlier ones (in one `levers` call
the bare loop went from 21.1 to 14.3 to 11.6 Jobs/s from its first run to its third). So a run
is not over until its namespace is gone, and the time that took is kept for the report.
"""

from __future__ import annotations

import json
import time
import uuid

from kubernetes import client as k8s

from bench.ends import watched_events


class Namespaces:
    def __init__(self, core: k8s.CoreV1Api, s3_keys: tuple[str, str]) -> None:
        self._core, self._s3_keys = core, s3_keys
        self.settle_s: list[float] = []  # how long each dropped namespace took to go

    def make(self) -> str:
        """A new namespace holding the MinIO Secret the worker's Jobs are given."""
        name = f"bench-{uuid.uuid4().hex[:8]}"
        self._core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        user, password = self._s3_keys
        self._core.create_namespaced_secret(
            name,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="mstc-minio"),
                string_data={"rootUser": user, "rootPassword": password},
            ),
        )
        return name

    def drop(self, name: str, timeout_s: int = 900) -> None:
        """Delete namespace `name` and return once the API server has removed it."""
        selector = f"metadata.name={name}"
        listed = self._core.list_namespace(field_selector=selector, _preload_content=False)
        version = json.loads(listed.data)["metadata"]["resourceVersion"]
        started = time.monotonic()
        self._core.delete_namespace(name, propagation_policy="Background")
        response = self._core.list_namespace(
            field_selector=selector, watch=True, resource_version=version,
            timeout_seconds=timeout_s, _preload_content=False,
        )  # fmt: skip
        try:
            for event in watched_events(response):
                if event["type"] == "DELETED":
                    self.settle_s.append(round(time.monotonic() - started, 1))
                    return
        finally:
            response.close()
        raise RuntimeError(f"namespace {name} still there after {timeout_s} s")
