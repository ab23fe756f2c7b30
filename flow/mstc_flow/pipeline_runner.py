"""The pipeline runner: pipelines taken in, their tasks submitted as they become ready.

Three ways in, all through the store (`Pipelines`, `PipelineProgress`), so every replica
may do any of them and a restarted process just goes on from what is stored:

* `create` (the API's POST): the document is parsed and checked by the client's own code
  (`mstc_client.pipeline_files`), inputs no task writes are looked up in the bucket, and the
  pipeline with its tasks' requests and edges is stored in one transaction.
* `on_message` (the inbox thread): a job event whose correlationId is `pipe:<attempt>` moves
  that attempt and its task forward (committed before the inbox acks the message).
* `purge_attempt` (`mstc queue purge`): an attempt whose request was taken out of the work
  queue unrun fails as if its Job had ("purged from the work queue").
* The scheduling thread: on a wake (an event, a new pipeline, a retry) or every
  `MSTC_FLOW_PENDING_SCAN_SECONDS`, it claims ready tasks of the running pipelines, oldest
  pipeline first, file order, up to each pipeline's parallelism, and submits each; it re-sends
  claims left unsubmitted longer than `MSTC_FLOW_CLAIM_STALE_SECONDS` (same attempt, same
  correlation id, so the worker adopts the Job a first send made), and sends the cancels of
  cancelled pipelines' Jobs.

Every change is published as a pipeline event after its commit (`pipeline_events`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from mstc_client.errors import PipelineInvalid
from mstc_client.pipeline_files import decode_pipeline, parse_pipeline
from mstc_flow.broker import InboxMessage
from mstc_flow.errors import NotFound, PipelineRefused, TransientError
from mstc_flow.pipeline_events import Publish, publish_changes, started_change
from mstc_flow.settings import FlowSettings
from mstc_flow.store.pipeline_progress import Change, JobEvent, PipelineProgress
from mstc_flow.store.pipelines import (
    Claim,
    NewTask,
    Pipelines,
    attempt_id_of,
    new_pipeline_id,
)

__all__ = ["DOCUMENT", "PipelineRunner"]

log = logging.getLogger(__name__)

DOCUMENT = "pipeline document"  # how refusals name the posted document
Exists = Callable[[str, str], bool]  # (bucket, key) -> the object is there


class SubmitPort(Protocol):
    """`mstc_flow.submitter.Submitter`, as the runner uses it."""

    def submit(self, correlation_id: str, request: dict[str, Any]) -> None: ...
    def cancel(self, job_name: str, reason: str, timeout: float = 30.0) -> dict[str, Any]: ...


class PipelineRunner:
    """Takes pipelines in, follows their Jobs' events, and submits their tasks."""

    def __init__(
        self, settings: FlowSettings, pipelines: Pipelines, progress: PipelineProgress,
        submitter: SubmitPort, *, publish: Publish, exists: Exists,
    ) -> None:  # fmt: skip
        self._settings = settings
        self._pipelines, self._progress = pipelines, progress
        self._submitter, self._publish, self._exists = submitter, publish, exists
        self._stale = timedelta(seconds=settings.claim_stale_seconds)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._unsent: list[Claim] = []
        self._thread = threading.Thread(target=self._run, name="mstc-flow-pipelines", daemon=True)

    # --- operations (the API's) ----------------------------------------------------------------

    def create(self, data: bytes, fmt: str | None = None) -> dict[str, Any]:
        """Parse, check and store a pipeline; {"id", "name", "tasks", "stages"}."""
        try:
            pipeline = parse_pipeline(decode_pipeline(data, source=DOCUMENT), source=DOCUMENT,
                                      fmt=fmt)  # fmt: skip
            bucket = pipeline.bucket or self._settings.client.bucket
            pipeline.check_inputs(lambda key: self._exists(bucket, key))
            stages = pipeline.stages()
            needs = pipeline.dependencies()
            tasks = [NewTask(task.name, task.source, pipeline.request_for(task, bucket=bucket),
                             needs[task.name]) for task in pipeline.tasks]  # fmt: skip
        except PipelineInvalid as exc:
            raise PipelineRefused(str(exc), exc.task, exc.field, exc.line) from exc
        pipeline_id = new_pipeline_id()
        self._pipelines.create(
            pipeline_id=pipeline_id, name=pipeline.name, digest=pipeline.digest,
            document=data.decode("utf-8-sig"), parallelism=pipeline.parallelism, bucket=bucket,
            prefix=pipeline.prefix, replica=self._settings.replica_id, tasks=tasks,
        )  # fmt: skip
        log.info("pipeline %s (%s): %d tasks in %d stages", pipeline_id, pipeline.name,
                 len(tasks), len(stages))  # fmt: skip
        self._published([started_change(pipeline_id, pipeline.name)])
        return {"id": pipeline_id, "name": pipeline.name, "tasks": len(tasks),
                "stages": len(stages)}  # fmt: skip

    def retry(self, pipeline_id: str, task: str | None) -> dict[str, Any]:
        changes = self._progress.retry(pipeline_id, task)
        self._published(changes)
        tasks = [change.task for change in changes if change.state == "waiting"]
        return {"id": pipeline_id, "retried": tasks}

    def cancel(self, pipeline_id: str) -> dict[str, Any]:
        self._published(self._progress.cancel(pipeline_id))
        return self._pipelines.get(pipeline_id)

    # --- the work queue's purge (`queue_ops.PipelinePurges`) ------------------------------------

    def purge_attempt(self, attempt_id: str, reason: str) -> dict[str, Any] | None:
        """The attempt's request was purged from the work queue unrun: it fails with `reason`
        as a failed Job would (dependants skipped; a retry brings the task back)."""
        changes = self._progress.on_event(JobEvent(attempt_id, "failed", reason=reason))
        self._published(changes)
        failed = next((change for change in changes if change.attempt == attempt_id), None)
        if failed is None:
            return None  # not a current attempt still queued
        return {"pipelineId": failed.pipeline_id, "task": failed.task, "attempt": attempt_id}

    def waiting_tasks(self) -> dict[str, int]:
        """Tasks of running pipelines waiting for their dependencies, and queued."""
        counts = self._pipelines.task_counts()
        return {"waiting": counts.get("waiting", 0), "queued": counts.get("queued", 0)}

    # --- job events (the inbox thread) ---------------------------------------------------------

    def on_message(self, message: InboxMessage) -> None:
        if not message.routing_key.startswith("mstc.job."):
            return
        try:
            body = json.loads(message.body)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(body, dict):
            return
        attempt_id = attempt_id_of(body.get("correlationId"))
        if attempt_id is None or not isinstance(body.get("event"), str):
            return
        exit_code = body.get("exitCode")
        event = JobEvent(
            attempt_id, body["event"], _text(body.get("jobName")),
            exit_code if isinstance(exit_code, int) else None,
            _why(body),
            _when(body.get("at")),
        )  # fmt: skip
        self._published(self._progress.on_event(event))

    # --- the scheduling thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            woken = self._wake.wait(self._settings.pending_scan_seconds)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.run_once(scan=not woken)
            except TransientError as exc:
                log.warning("pipelines paused: %s", exc)  # the next pass tries again
                self._stopping.wait(self._settings.submit_backoff_seconds)
            except Exception:
                # A bug must not end the runner for good; the store still holds everything.
                log.exception("a pipeline pass failed unexpectedly")

    def run_once(self, *, scan: bool = True) -> None:
        """One pass: re-send stale claims, claim and submit ready tasks, send due cancels."""
        unsent, self._unsent = self._unsent, []
        for claim in unsent + self._pipelines.stale_claims(self._settings.replica_id, self._stale):
            self._send(claim)
        running = self._pipelines.running()
        for pipeline_id in running:
            while not self._stopping.is_set():
                next_claim = self._pipelines.claim_next(pipeline_id, self._settings.replica_id)
                if next_claim is None or not self._send(next_claim):
                    break
        for attempt_id, job_name in self._progress.cancels_due():
            try:
                self._submitter.cancel(job_name, "its pipeline was cancelled")
            except TransientError as exc:
                log.warning("cancel of %s not sent: %s", job_name, exc)
                continue
            self._progress.mark_cancel_sent(attempt_id)
        if scan:
            self._published(self._progress.settle_all(running))

    def _send(self, claim: Claim) -> bool:
        try:
            self._submitter.submit(claim.correlation_id, claim.request)
        except TransientError as exc:
            log.warning("task %s of %s not submitted (tried again later): %s", claim.task,
                        claim.pipeline_id, exc)  # fmt: skip
            self._unsent.append(claim)
            return False
        self._pipelines.mark_submitted(claim.attempt_id)
        log.info("pipeline %s: task %s submitted (attempt %d, %s)", claim.pipeline_id,
                 claim.task, claim.number, claim.attempt_id)  # fmt: skip
        return True

    def _published(self, changes: list[Change]) -> None:
        if changes:
            publish_changes(self._publish, changes, self._settings.replica_id)
            self._wake.set()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _why(body: dict[str, Any]) -> str | None:
    """ "BackoffLimitExceeded: Job has reached ...": the event's reason and its sentence."""
    parts = [_text(body.get(key)) for key in ("reason", "message", "error")]
    return ": ".join(dict.fromkeys(part for part in parts if part)) or None


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def bucket_exists_check(read_etag: Callable[[str, str], str]) -> Exists:
    """An `Exists` from an ETag lookup that raises NotFound for a missing object."""

    def exists(bucket: str, key: str) -> bool:
        try:
            read_etag(bucket, key)
        except NotFound:
            return False
        return True

    return exists
