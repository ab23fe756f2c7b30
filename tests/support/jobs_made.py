"""Jobs made in a namespace, counted from the API server's own stream of Job events.

The fault table's "Jobs made" figures come from here rather than from the Jobs left at the
end: a Job deleted by its TTL, or deleted and made again under the same name, still counts,
because what is counted is every Job uid the API server announced (ADDED events, plus the
Jobs already there when counting began), from a watch started before the fault.

`count()` is exact at the moment it is called: it creates a marker Job (suspended, so no
pod is ever made for it, and without the worker's label, so the worker never sees it) and
waits for the watch to deliver it. One watch delivers a resource's events in
resourceVersion order, so by then every Job made before the call has been seen. A watch
that loses its place (410 Gone, as after an API server restart) is replaced by a relist, which
cannot see a Job made and deleted in between: `count()` then fails unless told the caller
accepts that. A connection refused (the API server away) is retried from the last version.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

__all__ = ["MARKER_LABEL", "JobsMade"]

MARKER_LABEL = "mstc.test/jobs-made-marker"
_WATCH_SEGMENT_S = 5  # each watch call ends this often, so a stopped watch ends soon after


class JobsMade:
    """A running count of the Jobs made in one namespace; start before the fault."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self._batch = k8s.BatchV1Api(api_client)
        self._namespace = namespace
        self._made: dict[str, str] = {}  # uid -> name, in the order the server announced them
        self._markers_seen: set[str] = set()
        self._seen = threading.Condition()
        self._broken: BaseException | None = None
        self.relists = 0  # watches that ended in 410 Gone and were replaced by a relist
        self._stopping = threading.Event()

    def start(self) -> None:
        listed = self._batch.list_namespaced_job(self._namespace)
        for job in listed.items:
            self._note("ADDED", job)
        version = listed.metadata.resource_version
        threading.Thread(target=self._watch, args=(version,), name="jobs-made", daemon=True).start()

    def stop(self) -> None:
        """Stop watching; the thread ends with its current watch call (not waited for)."""
        self._stopping.set()

    def count(self, timeout: float = 30, *, across_relists: bool = False) -> int:
        """How many Jobs were made in the namespace so far (markers aside)."""
        return len(self.names(timeout, across_relists=across_relists))

    def names(self, timeout: float = 30, *, across_relists: bool = False) -> list[str]:
        """The names of the Jobs made so far, one per Job (a name made twice is listed twice).

        A count across a relist (the API server restarted and forgot the watch's place) may
        miss a Job made and deleted in between: refused unless `across_relists` says the
        caller knows that, and says so in its row.
        """
        marker = self._create_marker()
        try:
            with self._seen:
                arrived = self._seen.wait_for(
                    lambda: marker in self._markers_seen or self._broken is not None, timeout
                )
                if self._broken is not None:
                    raise AssertionError(f"the Job watch broke; count unknown: {self._broken!r}")
                if not arrived:
                    raise AssertionError(f"the Job watch did not deliver {marker} in {timeout} s")
                if self.relists and not across_relists:
                    raise AssertionError(f"the Job watch was relisted {self.relists} times")
                return list(self._made.values())
        finally:
            self._batch.delete_namespaced_job(
                marker, self._namespace, propagation_policy="Background"
            )

    def _create_marker(self) -> str:
        name = f"jobs-made-marker-{uuid.uuid4().hex[:8]}"
        container = k8s.V1Container(name="marker", image="example.invalid/marker:1")
        job = k8s.V1Job(
            metadata=k8s.V1ObjectMeta(name=name, labels={MARKER_LABEL: "true"}),
            spec=k8s.V1JobSpec(
                suspend=True,
                template=k8s.V1PodTemplateSpec(
                    spec=k8s.V1PodSpec(containers=[container], restart_policy="Never")
                ),
            ),
        )
        self._batch.create_namespaced_job(self._namespace, job)
        return name

    def _watch(self, version: str) -> None:
        while not self._stopping.is_set():
            try:
                version = self._watch_from(version)
            except ApiException as exc:
                if exc.status != 410:
                    self._broke(exc)
                    return
                version = self._relist()  # events were lost: only a relist can tell what is
            except (OSError, urllib3.exceptions.HTTPError):
                self._stopping.wait(0.5)  # the API server is away (restarted): try again
            except Exception as exc:  # anything else: count() says the watch broke, and why
                self._broke(exc)
                return

    def _watch_from(self, version: str) -> str:
        stream = watch.Watch()
        for event in stream.stream(
            self._batch.list_namespaced_job,
            self._namespace,
            resource_version=version,
            timeout_seconds=_WATCH_SEGMENT_S,
            allow_watch_bookmarks=True,
        ):
            kind, job = event["type"], event["object"]
            if kind == "BOOKMARK":  # only a version to resume from (the client leaves it raw)
                version = event["raw_object"]["metadata"]["resourceVersion"]
                continue
            if kind == "ERROR":  # the client raises on 410; anything else is a break
                raise ApiException(status=event["raw_object"].get("code"), reason="watch error")
            version = job.metadata.resource_version
            self._note(kind, job)
        return version

    def _relist(self) -> str:
        """After a 410: the Jobs there now all count; one made and deleted meanwhile is unseen."""
        listed = self._batch.list_namespaced_job(self._namespace)
        with self._seen:
            self.relists += 1
        for job in listed.items:
            self._note("ADDED", job)
        return str(listed.metadata.resource_version)

    def _broke(self, exc: BaseException) -> None:
        with self._seen:
            self._broken = exc
            self._seen.notify_all()

    def _note(self, kind: str, job: Any) -> None:
        if kind != "ADDED":
            return
        meta = job.metadata
        with self._seen:
            if (meta.labels or {}).get(MARKER_LABEL):
                self._markers_seen.add(meta.name)
            else:
                self._made.setdefault(meta.uid, meta.name)
            self._seen.notify_all()
