"""One Job watch and one Pod watch per worker process, fanned out to callbacks.

Owns following the worker's Jobs and their pods without ever missing an ending, at a
cost that does not grow with the number of Jobs: two long-lived watch requests, each in
its own daemon thread, whatever the number of Jobs in flight (the Java worker opened one
watch per Job). Each thread lists first, so a Job that ended before the watch began is
delivered too, then watches from the list's resourceVersion. A watch that expires (410
Gone, either as an HTTP answer or as an ERROR event) or breaks (connection lost, server
error) is followed by a fresh list, which replays the current state of every object and
reports Jobs that vanished in the gap; a watch that simply times out resumes from the
last resourceVersion seen (bookmarks keep it recent).

`WatchStream` turns one open watch response into `WatchEvent`s and can be torn down from
another thread (stop, tests). The API calls themselves are `KubeClient`'s; import
`JobWatcher` from `mstc_worker.kube`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from mstc_worker.errors import TransientError
from mstc_worker.kube_errors import CONNECTION_ERRORS, RETRY_AFTER_MAX, KubeUnavailable
from mstc_worker.kube_views import (
    JobView,
    PodView,
    WatchEvent,
    WatchExpired,
    peek_watch_line,
    watch_event,
)

if TYPE_CHECKING:
    from mstc_worker.kube import KubeClient

__all__ = ["JobWatcher", "WatchStream", "watch_backoff"]

log = logging.getLogger(__name__)
Kind = Literal["jobs", "pods"]
V = TypeVar("V", JobView, PodView)


def watch_backoff(failures: int, retry_after: float | None = None) -> float:
    """Seconds to wait after `failures` consecutive failed attempts: 0.25 s doubling to 10 s.

    A server's Retry-After hint (a throttled watch) makes the wait at least that long,
    capped like every other retry so that a bad hint cannot park the watch for good.
    """
    backoff = 0.0 if failures <= 0 else min(10.0, 0.25 * 2 ** (failures - 1))
    if retry_after is None:
        return backoff
    return max(backoff, min(retry_after, RETRY_AFTER_MAX))


class WatchStream:
    """One open watch request, iterated as `WatchEvent`s; `abort()` ends it from any thread.

    With `keep`, the events of Jobs (and of pods of Jobs) whose name it refuses are not
    decoded: they come out as SKIPPED events that only carry their resourceVersion.
    """

    def __init__(
        self,
        response: Any,
        kind: Literal["jobs", "pods"],
        *,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        self._response = response
        self._kind: Literal["jobs", "pods"] = kind
        self._keep = keep
        self._aborted = False

    def __iter__(self) -> Iterator[WatchEvent]:
        pending = b""
        try:
            for chunk in self._response.stream(amt=None, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield self._event(line)
        except Exception as exc:
            if self._aborted:
                return  # whatever the torn-down connection raised, we asked for it
            if isinstance(exc, CONNECTION_ERRORS):
                raise KubeUnavailable(f"{self._kind} watch broke: {exc}") from exc
            raise
        finally:
            self.close()

    def _event(self, line: bytes) -> WatchEvent:
        if self._keep is not None:
            peeked = peek_watch_line(line, self._kind)
            if peeked is not None and not self._keep(peeked[0]):
                return WatchEvent("SKIPPED", peeked[1], None)
        return watch_event(json.loads(line), self._kind)

    def abort(self) -> None:
        """Unblock a reader stuck waiting for the next event; iteration then simply ends."""
        self._aborted = True
        try:
            # Shutting the socket down wakes a thread blocked in recv(); the reading
            # thread then closes the response itself, so the two never race on it.
            self._response.shutdown()
        except (AttributeError, NotImplementedError, ValueError, RuntimeError, OSError):
            self._response.close()  # already released, or an urllib3 without shutdown()

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()


class JobWatcher:
    """Calls `on_job`, `on_pod` and `on_job_gone` for every change of the worker's Jobs and pods.

    Callbacks run on the watch threads and must be quick (queue the work); an exception
    in one is logged and the watch goes on. `synced` is set once both first lists were
    delivered. `reconnects` counts watches re-opened after an expiry or a failure.
    Deleted pods are delivered to `on_pod` too: their last state may be news.

    `keep(job_name)` limits all of it to some Jobs and their pods (a worker process's
    shard); the others' events are not even decoded. `known_jobs()` is the latest view
    of every kept Job, as the watch has it: what a periodic sweep needs, with no list.
    """

    def __init__(
        self,
        kube: KubeClient,
        on_job: Callable[[JobView], None],
        on_pod: Callable[[PodView], None],
        on_job_gone: Callable[[JobView], None],
        *,
        keep: Callable[[str], bool] | None = None,
        watch_timeout_s: int = 300,
    ) -> None:
        self._kube = kube
        self._keep = keep
        self._on_job, self._on_pod, self._on_job_gone = on_job, on_pod, on_job_gone
        self._timeout_s = watch_timeout_s
        self.synced = threading.Event()
        self.reconnects = 0
        self.relists = 0
        self.opened: dict[Kind, int] = {"jobs": 0, "pods": 0}  # watch requests, for diagnostics
        self.skipped: dict[Kind, int] = {"jobs": 0, "pods": 0}  # events not kept, not decoded
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listed: set[Kind] = set()
        self._streams: dict[Kind, WatchStream] = {}
        self._expire_next: set[Kind] = set()
        self._known: dict[str, JobView] = {}  # by name; written by the jobs thread, under _lock
        self._threads = [
            threading.Thread(target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True)
            for kind in ("jobs", "pods")
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop both watches; returns within about `timeout_s`."""
        self._stopping.set()
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.abort()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout_s)

    def known_jobs(self) -> list[JobView]:
        """The latest view of every (kept) Job the watch knows, deleted ones left out."""
        with self._lock:
            return list(self._known.values())

    def _wanted(self, job_name: str | None) -> bool:
        return self._keep is None or (job_name is not None and self._keep(job_name))

    def _expire(self) -> None:
        """End both live watches as if the server had answered 410 Gone (for tests)."""
        with self._lock:
            self._expire_next.update(self._streams)
            streams = list(self._streams.values())
        for stream in streams:
            stream.abort()

    # --- the loop of one watch thread ---------------------------------------------------------

    def _run(self, kind: Kind) -> None:
        resource_version: str | None = None  # None: list before watching
        failures = 0
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist(kind)
                resource_version = self._follow(kind, resource_version)
                failures = 0
            except WatchExpired as exc:
                log.info("%s watch expired, listing again: %s", kind, exc)
                resource_version = None
                self._count_reconnect()
            except Exception as exc:
                # Anything else, a lost connection or a bug: never let the watch die.
                failures += 1
                resource_version = None
                if self._stopping.is_set():
                    break
                hint = exc.retry_after if isinstance(exc, TransientError) else None
                delay = watch_backoff(failures, hint)
                log.warning(
                    "%s watch failed (%d in a row), again in %.2f s: %s", kind, failures, delay, exc
                )
                self._count_reconnect()
                self._stopping.wait(delay)

    def _follow(self, kind: Kind, resource_version: str) -> str:
        """Watch from `resource_version` until the stream ends; the last version seen."""
        stream = (self._kube.watch_jobs if kind == "jobs" else self._kube.watch_pods)(
            resource_version, timeout_s=self._timeout_s, keep=self._keep
        )
        with self._lock:
            self._streams[kind] = stream
            self.opened[kind] += 1
        try:
            if self._stopping.is_set():
                return resource_version
            for event in stream:
                resource_version = event.resource_version or resource_version
                if event.type == "SKIPPED":
                    self.skipped[kind] += 1
                elif isinstance(event.view, JobView):
                    if not self._wanted(event.view.name):
                        continue
                    if event.type == "DELETED":
                        with self._lock:
                            self._known.pop(event.view.name, None)
                        self._deliver(self._on_job_gone, event.view)
                    else:
                        with self._lock:
                            self._known[event.view.name] = event.view
                        self._deliver(self._on_job, event.view)
                elif isinstance(event.view, PodView) and self._wanted(event.view.job_name):
                    self._deliver(self._on_pod, event.view)
        finally:
            stream.close()
            with self._lock:
                self._streams.pop(kind, None)
                expired = kind in self._expire_next
                self._expire_next.discard(kind)
        if expired:
            raise WatchExpired(f"{kind} watch expired on request")
        return resource_version

    def _relist(self, kind: Kind) -> str:
        """Deliver the current state of every object of `kind`; the list's resourceVersion."""
        if kind == "jobs":
            listed, resource_version = self._kube.list_jobs()
            jobs = [job for job in listed if self._wanted(job.name)]
            current = {job.name: job for job in jobs}
            with self._lock:
                gone = [
                    old
                    for name, old in self._known.items()
                    if name not in current or current[name].uid != old.uid
                ]
                # Deleted (or deleted and recreated) while no watch was looking.
                for old in gone:
                    del self._known[old.name]
                self._known.update(current)
            for old in gone:
                self._deliver(self._on_job_gone, old)
            for job in jobs:
                self._deliver(self._on_job, job)
        else:
            pods, resource_version = self._kube.list_pods()
            for pod in pods:
                if self._wanted(pod.job_name):
                    self._deliver(self._on_pod, pod)
        with self._lock:
            self.relists += 1
            self._listed.add(kind)
            if len(self._listed) == 2:
                self.synced.set()
        return resource_version

    def _count_reconnect(self) -> None:
        with self._lock:
            self.reconnects += 1

    @staticmethod
    def _deliver(callback: Callable[[V], None], view: V) -> None:
        try:
            callback(view)
        except Exception:
            log.exception("watch callback %r failed on %s", callback, view.name)
