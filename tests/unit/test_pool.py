"""The worker pool's promise to the service, with real spawned processes that only talk.

Each process here runs a stand-in for `runner.worker_main` (no Kubernetes, no MinIO): it says
one thing about the first message in its inbox and dies at once, the way a poison request
kills a worker process right after it said `JobReceived`. The service's rules for a dead
process (tests/unit/test_service_rules.py) rely on what this shows: what a process said
before it died comes before its `WorkerDied`, and `send` names the incarnation it reached.
"""

from __future__ import annotations

import multiprocessing.queues
import os
from collections.abc import Iterator

import pytest

from mstc_worker.messages import JobEnded, ReleaseJob, ServiceToWorker, WorkerDied
from mstc_worker.pool import WorkerPool
from mstc_worker.runner import Outbox
from mstc_worker.settings import Settings
from tests.unit.conftest import MakeSettings

POISONED = 70


def say_and_die(
    _settings: Settings,
    index: int,
    _count: int,
    inbox: multiprocessing.queues.Queue[ServiceToWorker],
    outbox: Outbox,
) -> None:
    """A worker process that takes one message, says so, and dies before anything else."""
    message = inbox.get()
    if isinstance(message, ReleaseJob):
        outbox.put(JobEnded(index, message.job_name))
        os._exit(POISONED)  # no clean-up, no flushing: as a crash


@pytest.fixture
def pool(make_settings: MakeSettings) -> Iterator[WorkerPool]:
    workers = WorkerPool(make_settings(MSTC_PROCESSES="1"), main=say_and_die)
    workers.start()
    yield workers
    workers.stop()


def test_what_a_process_said_before_it_died_comes_before_its_death(pool: WorkerPool) -> None:
    messages = pool.messages()

    assert pool.send(0, ReleaseJob("first")) == 1
    assert next(messages) == JobEnded(0, "first")
    assert next(messages) == WorkerDied(0, 1, POISONED)

    # Started again under the same index: the next incarnation, and the same promise.
    assert pool.send(0, ReleaseJob("second")) == 2
    assert next(messages) == JobEnded(0, "second")
    assert next(messages) == WorkerDied(0, 2, POISONED)
