"""The pipelines' events: routing keys and bodies, published after the commit that caused them.

Routing keys on the events exchange (the worker's, `amq.topic` by default):
`mstc.pipeline.started.<word>`, `mstc.pipeline.task.<state>.<word>` and
`mstc.pipeline.finished.<word>`, where `<word>` is the pipeline's name made one topic level
as the worker makes a Job's (`mstc_client.events.topic_word`). Bodies: JSON with `format` 1,
`event` (`started`, `task`, `finished`), `eventId`, `at`, `replica`, `pipelineId`,
`pipeline` (its name), and `task`, `attempt`, `state`, `jobName` for a task, `state` and
`failedTasks` when it finished. eventId: `<pipeline id>:started`,
`<pipeline id>:task:<task>:<attempt or ->:<state>`, `<pipeline id>:finished:<state>`.
Best effort: the publisher logs what it could not publish and the pipeline goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from mstc_client.events import topic_word
from mstc_flow.store.pipeline_progress import Change

__all__ = ["Publish", "event_of", "publish_changes", "started_change"]

FORMAT = 1
Publish = Callable[[str, dict[str, Any]], object]
_PIPELINE_STATES = frozenset({"succeeded", "failed", "cancelled"})


def started_change(pipeline_id: str, name: str) -> Change:
    return Change(pipeline_id, name, "started")


def event_of(change: Change, *, replica: str, now: datetime) -> tuple[str, dict[str, Any]]:
    """(routing key, body) of one change."""
    word = topic_word(change.pipeline)
    body: dict[str, Any] = {
        "format": FORMAT, "at": now.astimezone(UTC).isoformat(timespec="milliseconds"),
        "replica": replica, "pipelineId": change.pipeline_id, "pipeline": change.pipeline,
    }  # fmt: skip
    if change.task is not None:
        body.update(event="task", task=change.task, attempt=change.attempt,
                    state=change.state, jobName=change.job_name)  # fmt: skip
        body["eventId"] = (f"{change.pipeline_id}:task:{change.task}:"
                           f"{change.attempt or '-'}:{change.state}")  # fmt: skip
        return f"mstc.pipeline.task.{change.state}.{word}", body
    if change.state in _PIPELINE_STATES:
        body.update(event="finished", state=change.state, failedTasks=list(change.failed_tasks),
                    eventId=f"{change.pipeline_id}:finished:{change.state}")  # fmt: skip
        return f"mstc.pipeline.finished.{word}", body
    body.update(event="started", state="running", eventId=f"{change.pipeline_id}:started")
    return f"mstc.pipeline.started.{word}", body


def publish_changes(publish: Publish, changes: Iterable[Change], replica: str) -> None:
    now = datetime.now(UTC)
    for change in changes:
        key, body = event_of(change, replica=replica, now=now)
        publish(key, body)
