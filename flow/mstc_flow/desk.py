"""The API's answers (`FlowPorts`), from the history, the trigger engine and the bucket.

The API layer knows HTTP and tokens; what a question means lives here: a job is found by its
request id or its made name in the history; its log is read from the bucket its final event
named, its outputs listed and read by the name prefix the worker gives them; the overview's
counts and throughput come from the history; a retry sends the request the `accepted` event
recorded, as a new firing linked to the first; a cancel goes to the workers by the made Job's
name; the work queue's status and purge are `queue_ops`'. Kept apart from `service` (which
builds and runs the parts) so each stays short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from mstc_client.catalog import Catalog, Entry
from mstc_flow.catalog_source import CatalogKeeper
from mstc_flow.errors import NotFound, PermanentError
from mstc_flow.objects import ObjectReader
from mstc_flow.pipeline_runner import PipelineRunner
from mstc_flow.queue_ops import QueueOps
from mstc_flow.store.firings import PARKED, Firings
from mstc_flow.store.flags import Flags
from mstc_flow.store.history import History
from mstc_flow.store.history_records import (
    FINAL_STATES,
    JobPage,
    JobQuery,
    JobRecord,
    ReplicaRecord,
)
from mstc_flow.store.pipelines import Pipelines
from mstc_flow.submitter import Submitter
from mstc_flow.triggers import Triggers

__all__ = ["Desk", "per_minute"]

# The worker bounds a stored log to 1 MiB; a little more covers its header lines.
_MAX_LOG_BYTES = 2 * 1024 * 1024
# Outputs go through the flow's memory on download; bigger ones are fetched from the bucket.
_MAX_OUTPUT = 64 * 1024 * 1024
_MAX_OUTPUTS = 200


class Desk:
    """Implements `mstc_flow.api.ports.FlowPorts` over the service's parts."""

    def __init__(
        self,
        *,
        history: History,
        firings: Firings,
        triggers: Triggers,
        submitter: Submitter,
        objects: Callable[[], ObjectReader],
        keeper: CatalogKeeper | None,
        queue: QueueOps,
        ready: Callable[[], bool],
        flags: Flags,
        pipelines: Pipelines,
        runner: PipelineRunner,
    ) -> None:
        self._history, self._firings, self._triggers = history, firings, triggers
        self._submitter, self._objects, self._keeper = submitter, objects, keeper
        self._queue, self._ready, self._flags = queue, ready, flags
        self._pipelines, self._runner = pipelines, runner

    # --- history -------------------------------------------------------------------------------

    def list_jobs(self, query: JobQuery) -> JobPage:
        return self._history.list_jobs(query)

    def get_job(self, key: str) -> JobRecord:
        return self._history.get_job(key)

    def job_events(self, request_id: str) -> Sequence[Mapping[str, Any]]:
        return self._history.events(request_id)

    def replicas(self) -> Sequence[ReplicaRecord]:
        return self._history.replicas()

    # --- stalled flags -------------------------------------------------------------------------

    def flags(self) -> list[dict[str, Any]]:
        return [flag.to_json() for flag in self._flags.open()]

    def job_flags(self, request_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        found = self._flags.open_of(request_ids)
        return {rid: [flag.to_json() for flag in flags] for rid, flags in found.items()}

    def state_counts(self, since: datetime | None = None) -> dict[str, int]:
        return self._history.state_counts(since)

    def finished_per_minute(self, now: datetime, minutes: int) -> list[int]:
        finished = self._history.finished_since(now - timedelta(minutes=minutes))
        return per_minute(finished, now, minutes)

    def outputs(self, job: Any) -> list[dict[str, Any]]:
        """The Job's objects in its output bucket, named `<prefix>-<Job name>...` as the worker
        writes them (the log among them): [{"name", "size"}]."""
        prefix = _output_prefix(job)
        if prefix is None:
            return []
        listed = self._objects().list(job.output_bucket, prefix, limit=_MAX_OUTPUTS)
        return [{"name": name, "size": size} for name, size in listed]

    def read_output(self, job: Any, name: str) -> bytes:
        """One of the Job's outputs; NotFound for a name that is not one (no other object of
        the bucket is readable this way)."""
        prefix = _output_prefix(job)
        if prefix is None or not name.startswith(prefix):
            raise NotFound(f"{name[:200]!r} is not an output of {job.job_name or job.request_id}.")
        try:
            data, _etag = self._objects().read(job.output_bucket, name, max_bytes=_MAX_OUTPUT)
        except NotFound as exc:
            raise NotFound(f"The output s3://{job.output_bucket}/{name} is gone.") from exc
        if len(data) > _MAX_OUTPUT:
            raise PermanentError(
                f"{name} is larger than {_MAX_OUTPUT // 2**20} MiB: fetch it from the bucket."
            )
        return data

    def read_log(self, job: Any) -> bytes:
        if not job.log_bucket or not job.log_object:
            raise NotFound(f"Job {job.job_name or job.request_id} has no stored log (yet).")
        try:
            data, _etag = self._objects().read(
                job.log_bucket, job.log_object, max_bytes=_MAX_LOG_BYTES
            )
        except NotFound as exc:
            raise NotFound(
                f"The log s3://{job.log_bucket}/{job.log_object} is gone from the bucket."
            ) from exc
        return data[:_MAX_LOG_BYTES]

    # --- changes -------------------------------------------------------------------------------

    def retry(self, key: str) -> dict[str, Any]:
        job = self._history.get_job(key)
        if job.state not in FINAL_STATES:
            raise PermanentError(
                f"Job {job.job_name or key} is still {job.state}; retry it once it ends."
            )
        if not job.request:
            raise PermanentError(
                f"The history holds no request for {job.job_name or key} (its accepted event "
                "was never recorded), so it cannot be sent again."
            )
        firing = self._triggers.retry(job.request_id, dict(job.request))
        return {"firingId": firing.id, "retryOf": job.request_id}

    def cancel(self, key: str) -> dict[str, Any]:
        try:
            name = self._history.get_job(key).job_name or key
        except NotFound:
            name = key  # not (yet) in the history: the workers may still know it
        return self._submitter.cancel(name, "cancelled through mstc-flow")

    # --- the engine ----------------------------------------------------------------------------

    def job_firing(self, request_id: str) -> dict[str, Any] | None:
        firing = self._firings.by_request_id(request_id)
        return None if firing is None else firing.to_json()

    def last_firings(self, entries: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each entry's newest firing (camelCase), for the entries that fired."""
        latest = {name: self._firings.latest(name) for name in entries}
        return {name: firing.to_json() for name, firing in latest.items() if firing is not None}

    def fire(self, entry: str, payload: bytes) -> dict[str, Any]:
        return {"firingId": self._triggers.fire(entry, payload).id}

    def parked(self) -> list[dict[str, Any]]:
        return [firing.to_json() for firing in self._firings.in_state(PARKED)]

    def catalog(self) -> dict[str, Any]:
        keeper = self._keeper
        current: Catalog | None = self._triggers.catalog
        loaded = keeper.loaded_at if keeper is not None else None
        return {
            "source": current.source if current else (keeper.source.name if keeper else None),
            "digest": current.digest if current else None,
            "loadedAt": loaded.isoformat() if loaded else None,
            "error": keeper.last_error if keeper is not None else None,
            "entries": [_entry_json(entry) for entry in (current.entries if current else ())],
        }

    # --- the work queue -----------------------------------------------------------------------

    def queue_status(self) -> dict[str, Any]:
        return self._queue.status()

    def purge_queue(self) -> dict[str, Any]:
        return self._queue.purge()

    def ready(self) -> bool:
        return self._ready()

    # --- pipelines -----------------------------------------------------------------------------

    def create_pipeline(self, data: bytes, fmt: str) -> dict[str, Any]:
        return self._runner.create(data, fmt)

    def list_pipelines(self, state: str | None, limit: int) -> list[dict[str, Any]]:
        return self._pipelines.list_pipelines(state, limit)

    def get_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        return self._pipelines.get(pipeline_id)

    def retry_pipeline(self, pipeline_id: str, task: str | None) -> dict[str, Any]:
        return self._runner.retry(pipeline_id, task)

    def cancel_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        return self._runner.cancel(pipeline_id)


def per_minute(moments: Iterable[datetime], now: datetime, minutes: int) -> list[int]:
    """How many of `moments` fall in each of the `minutes` minutes before `now`, oldest first
    (the last slot ends at `now`; moments outside the window are not counted)."""
    counts = [0] * minutes
    start = now - timedelta(minutes=minutes)
    for moment in moments:
        slot = int((moment - start).total_seconds() // 60)
        if 0 <= slot < minutes:
            counts[slot] += 1
    return counts


def _output_prefix(job: Any) -> str | None:
    """`<prefix>-<Job name>` (or the Job name alone): how the worker names a Job's objects."""
    if not job.output_bucket or not job.job_name:
        return None
    prefix = (job.request or {}).get("prefix")
    return f"{prefix}-{job.job_name}" if isinstance(prefix, str) and prefix else job.job_name


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "trigger": entry.trigger.topic if entry.trigger else None,
        "bindingKey": entry.trigger.binding_key if entry.trigger else None,
        "image": entry.request.get("image"),
        "concurrency": str(entry.concurrency),
        "maxInFlight": entry.max_in_flight,
        "expectedSeconds": entry.expected_seconds or None,
        "line": entry.line,
    }
