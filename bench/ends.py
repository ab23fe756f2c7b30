"""When each Job ended, as the API server showed it: the zero of every reply delay.

A Job's `completionTime` has whole seconds and is stamped by the Job controller before its
status write lands, so a delay counted from it carries up to a second of rounding and the
controller's own lag, which no worker can hide. The bench therefore keeps one watch of its
own on the namespace (as a bare client would) and notes the moment each Job is first shown
ended: a reply delay is the reply's arrival less that moment, both on this machine's clock.
The `completionTime` figure is reported beside it, and the same watch counts how many Jobs
were in flight at once (created, not yet ended) and notes when each Job's pod was first shown
ready: until the last one is, the cluster is still starting pods, and finishes share the
machine with that work.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from kubernetes import client as k8s

from bench.meters import pct


class JobEnds:
    """A watch of one namespace's Jobs from a thread; `start()`, then read, then `stop()`."""

    def __init__(self, batch: k8s.BatchV1Api, namespace: str) -> None:
        self._batch, self._namespace = batch, namespace
        self._lock = threading.Lock()
        self._seen = threading.Condition(self._lock)
        self._live: set[str] = set()
        self.ended: dict[str, float] = {}  # Job name -> monotonic time first seen ended
        self.missed: set[str] = set()  # ended while the watch was away: no time to give
        self.ready: dict[str, float] = {}  # Job name -> monotonic time its pod was first ready
        self.relists = 0  # times the watch broke and the namespace was listed again
        self.peak_in_flight = 0
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name="job-ends", daemon=True)

    def start(self) -> JobEnds:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._response is not None:
            # Not close(): from another thread it waits on the reading one, which waits on
            # the socket; shutting the socket down ends that read at once (a watch that
            # ended by itself has no socket left: nothing to end).
            with suppress(OSError):
                self._response.shutdown()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                version = self._list(relist=version is not None)
                self._follow(version)
            except Exception:
                # A broken watch lists again, as a client would.
                if self._stop.wait(0.2):
                    return

    def _list(self, *, relist: bool) -> str:
        """List the namespace's Jobs; on a relist, a Job first seen ended here ended while
        the watch was away, at a moment nobody saw: it is counted as missed, not timed."""
        listed = json.loads(
            self._batch.list_namespaced_job(self._namespace, _preload_content=False).data
        )
        if relist:
            self.relists += 1
        for job in listed["items"]:
            self._see(job, timed=not relist)
        return str(listed["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> None:
        self._response = self._batch.list_namespaced_job(
            self._namespace, watch=True, resource_version=version, allow_watch_bookmarks=False,
            timeout_seconds=3600, _preload_content=False,
        )  # fmt: skip
        for event in watched_events(self._response):
            if event["type"] == "ERROR":  # e.g. 410 Gone: the version is too old, list again
                return
            if event["type"] == "DELETED":
                with self._lock:
                    self._live.discard(event["object"]["metadata"]["name"])
            elif event["type"] in ("ADDED", "MODIFIED"):
                self._see(event["object"])

    def _see(self, job: dict[str, Any], *, timed: bool = True) -> None:
        name = job["metadata"]["name"]
        status = job.get("status") or {}
        ended = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        with self._lock:
            if name in self.ended or name in self.missed:
                return
            if ended:
                if timed:
                    self.ended[name] = time.monotonic()
                else:
                    self.missed.add(name)
                self._live.discard(name)
                self._seen.notify_all()
            else:
                self._live.add(name)
                self.peak_in_flight = max(self.peak_in_flight, len(self._live))
                if status.get("ready") and name not in self.ready:
                    self.ready[name] = time.monotonic()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._live)

    def wait_ended(self, names: list[str], timeout: float) -> None:
        """Until the watch has seen every Job of `names` end (it may trail the reply)."""
        with self._seen:
            self._seen.wait_for(
                lambda: all(n in self.ended or n in self.missed for n in names), timeout=timeout
            )


def watched_events(response: Any) -> Iterator[dict[str, Any]]:
    """The events of a raw watch response, one per line."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def reply_delays(
    ends: JobEnds, replies_at: dict[str, float], start: float
) -> tuple[list[float], list[tuple[float, float]]]:
    """Reply delays (s) of the Jobs both seen ended and replied for, and the series
    (seconds since `start` at which the Job ended, its delay) for the plot.

    A delay can be a little below zero: the worker's watch and the bench's race, and the
    reply may beat the bench's own sight of the end. Such values are kept as measured.
    """
    series = sorted(
        (ends.ended[name] - start, at - ends.ended[name])
        for name, at in replies_at.items()
        if name in ends.ended
    )
    return [delay for _, delay in series], series


def after_last_ready(ends: JobEnds, replies_at: dict[str, float], start: float) -> dict[str, float]:
    """Reply delays split at the moment the last Job's pod was first ready (seconds since
    `start`): the Jobs that ended before it shared the machine with pods still starting."""
    if not ends.ready:
        return {}
    last = max(ends.ready.values()) - start
    split: dict[str, list[float]] = {"before": [], "after": []}
    for ended, delay in reply_delays(ends, replies_at, start)[1]:
        split["after" if ended > last else "before"].append(delay)
    row = {"last_pod_ready_s": round(last, 1)}
    for side, delays in split.items():
        row[f"reply_delay_jobs_{side}_last_ready"] = len(delays)
        if delays:
            row[f"reply_delay_p99_s_{side}_last_ready"] = round(pct(delays, 99), 2)
    return row
