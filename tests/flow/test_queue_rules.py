"""The purge's rules, one per kind of request taken from the work queue (`mstc_flow.queue_ops`).

The store is real (the `database` fixture: SQLite, and the stack's PostgreSQL); the work queue
is a list standing for the broker's side, which tests/flow/test_queue_stack.py runs for real.
Checked: a redelivered request is kept (a worker had it: its Job may exist); a firing's request
finishes the firing as purged and frees its slot; a stray `flow:` re-send is dropped without a
reply; a `pipe:` request is kept without a pipeline store and fails its task with one; another
client's request gets the failure reply its client can read, unless it has no reply queue or
the queue is the flow's own.
"""

from __future__ import annotations

from typing import Any

from mstc_client.protocol import Status, parse_reply
from mstc_flow.queue_ops import PURGED_REASON, QueueOps, purged_reply
from mstc_flow.settings import load_settings
from mstc_flow.store.db import Database
from mstc_flow.store.firings import SUBMITTED, Firings, new_firing_id
from mstc_flow.store.history import History
from mstc_flow.workqueue import Decide, Decision, QueueCounts, WaitingRequest

FLOW_REPLIES = "mstc.flow.replies.test"


class ListedQueue:
    """The work queue's waiting requests as a list; records each decision."""

    def __init__(self, requests: list[WaitingRequest]) -> None:
        self.requests = requests
        self.decisions: list[Decision] = []

    def counts(self) -> QueueCounts:
        return QueueCounts("mstc.queue.work", len(self.requests), 0)

    def take_waiting(self, decide: Decide) -> int:
        self.decisions = [decide(request) for request in self.requests]
        return sum(decision.drop for decision in self.decisions)


class Pipelines:
    def __init__(self) -> None:
        self.purged: list[tuple[str, str]] = []

    def purge_attempt(self, attempt_id: str, reason: str) -> dict[str, Any] | None:
        self.purged.append((attempt_id, reason))
        if attempt_id == "a-gone":
            return None
        return {"pipelineId": "p-000000000001", "task": "square-1", "attempt": attempt_id}

    def waiting_tasks(self) -> dict[str, int]:
        return {"waiting": 2, "queued": 1}


def waiting(correlation_id: str | None, reply_to: str | None = "amq.gen-client",
            *, redelivered: bool = False) -> WaitingRequest:  # fmt: skip
    return WaitingRequest(correlation_id, reply_to, redelivered, {}, b'{"image": "x"}')


def ops(database: Database, queue: ListedQueue, pipelines: Pipelines | None = None,
        freed: list[int] | None = None) -> QueueOps:  # fmt: skip
    settings = load_settings({"MSTC_FLOW_ADMIN_TOKEN": "a" * 16,
                              "MSTC_FLOW_REPLY_QUEUE": FLOW_REPLIES})  # fmt: skip
    slots = freed if freed is not None else []
    return QueueOps(settings, queue, Firings(database), History(database),
                    slot_freed=lambda: slots.append(1), pipelines=pipelines)  # fmt: skip


def submitted_firing(firings: Firings) -> str:
    firing_id = new_firing_id()
    firings.add(firing_id=firing_id, entry="ingest", kind="manual", topic="", source_key=firing_id,
                payload=b"", request={"image": "x"})  # fmt: skip
    assert firings.mark_submitted(firing_id)
    return firing_id


def test_a_request_a_worker_had_before_is_kept(database: Database) -> None:
    queue = ListedQueue([waiting("client-1", redelivered=True)])
    answer = ops(database, queue).purge()
    assert queue.decisions == [Decision(drop=False)]
    assert (answer["purged"], answer["kept"], answer["others"]) == (0, 1, 0)


def test_a_firings_request_finishes_the_firing_as_purged_and_frees_its_slot(
    database: Database,
) -> None:
    firings = Firings(database)
    firing_id = submitted_firing(firings)
    stray = new_firing_id()  # a firing the store does not know: a stray re-send
    queue = ListedQueue([waiting(f"flow:{firing_id}", FLOW_REPLIES),
                         waiting(f"flow:{stray}", FLOW_REPLIES)])  # fmt: skip
    freed: list[int] = []
    answer = ops(database, queue, freed=freed).purge()
    assert queue.decisions == [Decision(drop=True), Decision(drop=True)]  # no reply: the flow's
    assert (answer["purged"], answer["firings"], answer["others"]) == (2, [firing_id], 1)
    firing = firings.get(firing_id)
    assert firing is not None
    assert (firing.state, firing.job_state, firing.last_error) == (
        "finished", "purged", PURGED_REASON,
    )  # fmt: skip
    assert firings.in_flight("ingest") == 0
    assert freed == [1]
    assert firings.in_state(SUBMITTED) == []


def test_a_pipeline_request_is_kept_without_a_pipeline_store(database: Database) -> None:
    queue = ListedQueue([waiting("pipe:a-0123456789abcdef", FLOW_REPLIES)])
    answer = ops(database, queue).purge()
    assert queue.decisions == [Decision(drop=False)]
    assert (answer["purged"], answer["kept"], answer["pipelineTasks"]) == (0, 1, [])


def test_a_pipeline_request_fails_its_task_through_the_pipeline_store(database: Database) -> None:
    pipelines = Pipelines()
    queue = ListedQueue([waiting("pipe:a-0123456789abcdef", FLOW_REPLIES),
                         waiting("pipe:a-gone", FLOW_REPLIES)])  # fmt: skip
    answer = ops(database, queue, pipelines).purge()
    assert queue.decisions == [Decision(drop=True), Decision(drop=True)]
    assert pipelines.purged == [("a-0123456789abcdef", PURGED_REASON), ("a-gone", PURGED_REASON)]
    assert answer["pipelineTasks"] == [
        {"pipelineId": "p-000000000001", "task": "square-1", "attempt": "a-0123456789abcdef"}
    ]
    assert (answer["purged"], answer["others"]) == (2, 1)


def test_another_clients_request_gets_a_failure_reply_it_can_read(database: Database) -> None:
    queue = ListedQueue([waiting("client-1"), waiting("client-2", None),
                         waiting(None, FLOW_REPLIES)])  # fmt: skip
    answer = ops(database, queue).purge()
    assert queue.decisions == [Decision(drop=True, reply=purged_reply()), Decision(drop=True),
                               Decision(drop=True)]  # fmt: skip
    assert (answer["purged"], answer["others"], answer["replied"]) == (3, 3, 1)
    reply = parse_reply(purged_reply())
    assert (reply.status, reply.reason, reply.job_name) == (Status.ERROR, "RequestPurged", None)
    assert reply.result.startswith("RequestPurged: ")  # the Java "<ErrorClass>: <message>" form


def test_status_counts_the_queue_the_firings_and_the_pipeline_tasks(database: Database) -> None:
    firings = Firings(database)
    firings.add(firing_id=new_firing_id(), entry="ingest", kind="manual", topic="",
                source_key="s-1", payload=b"", request={"image": "x"})  # fmt: skip
    queue = ListedQueue([waiting("client-1"), waiting("client-2")])
    shown = ops(database, queue, Pipelines()).status()
    assert shown == {"workQueue": "mstc.queue.work", "ready": 2, "consumers": 0,
                     "workersInFlight": 0, "pendingFirings": 1,
                     "pipelineTasks": {"waiting": 2, "queued": 1}}  # fmt: skip
