"""A task queue shared by pods (and their submitter): `queue.Queue`'s methods over RabbitMQ.

    from mstc_client.tasks import TaskQueue

    with TaskQueue.from_env() as tasks:  # in a Job's pod that asked for a task queue
        while True:
            try:
                task = tasks.get(timeout=5)
            except queue.Empty:
                break
            work_on(task)
            tasks.task_done()

The rules, and why:

- Name: a task queue called NAME is the durable RabbitMQ queue ``mstc.tasks.NAME`` (and a
  direct exchange of the same name, see `task_broker`). NAME is 1 to 100 letters, digits,
  ``_`` and ``-``, starting with a letter or digit: no dots or wildcards, so that the worker's
  permission pattern for it matches that one queue only.
- Tasks are JSON values (dicts, lists, strings, numbers, booleans, None), published
  persistent and confirmed: `put` returns once RabbitMQ has the task on disk. Nothing is
  pickled (a pickle runs code when loaded); what JSON cannot carry raises `TaskNotJson`.
- `get` takes one task without acknowledging it; `task_done` acknowledges the oldest task
  this TaskQueue took and has not yet marked done (as `queue.Queue` counts them). A task taken
  by a process that ends before `task_done` (a crash, a kill, a lost node once the connection
  times out) goes back to the queue and is handed to another consumer: every task is done at
  least once, and acknowledged exactly once. Work should therefore be safe to redo.
- `qsize` and `empty` count the ready tasks: put and not taken. Tasks held by a consumer are
  not counted (RabbitMQ's count of ready messages, read live).
- `join` waits until the queue has no ready task and this TaskQueue holds no task it took
  without `task_done`. Tasks other processes hold are invisible over AMQP (RabbitMQ reports
  only ready messages to clients), so across processes `join` means "every task was taken";
  one whose taker dies comes back, but only after `join` returned. To know that every task
  was processed, wait for the Job (its pods end when `get` finds the queue empty).
- Heartbeats flow only inside calls: a task that takes longer than about twice
  `heartbeat_seconds` to process loses the connection (and RabbitMQ hands the task to another
  consumer). The default (600 s) covers tasks of up to ~20 minutes; raise it for longer ones.
- One TaskQueue is for one thread at a time; give each thread its own.
"""

from __future__ import annotations

import json
import os
import queue
import re
import time
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from mstc_client.errors import ConfigError, TaskNotJson, WaitTimeout
from mstc_client.task_broker import TaskChannel

__all__ = [
    "QUEUE_PREFIX",
    "TASKS_URL_ENV",
    "TASK_QUEUE_ENV",
    "TaskQueue",
    "queue_name",
]

QUEUE_PREFIX = "mstc.tasks."
# What the worker puts in the env of a Job's pods that asked for a task queue.
TASKS_URL_ENV = "MSTC_TASKS_URL"
TASK_QUEUE_ENV = "MSTC_TASK_QUEUE"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_DEFAULT_HEARTBEAT = 600
_JOIN_POLL_MAX = 2.0


def queue_name(name: str) -> str:
    """The RabbitMQ queue of the task queue `name`, after checking the name."""
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"task queue name {name!r}: use 1 to 100 letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    return f"{QUEUE_PREFIX}{name}"


def _encode(item: Any) -> bytes:
    try:
        # allow_nan=False: NaN and Infinity are not JSON, and other readers would refuse them.
        return json.dumps(item, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise TaskNotJson(
            f"a task must be a JSON value (dict, list, str, int, float, bool, None); "
            f"{type(item).__name__} is not: {exc}"
        ) from exc


class TaskQueue:
    """The task queue `name` on the broker at `url` (amqp://user:pass@host:port/vhost)."""

    def __init__(self, url: str, name: str, *, heartbeat_seconds: int = _DEFAULT_HEARTBEAT) -> None:
        self.name = name
        self._channel = TaskChannel(url, queue_name(name), heartbeat_seconds=heartbeat_seconds)
        self._taken: deque[int] = deque()  # delivery tags, oldest first

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, heartbeat_seconds: int = _DEFAULT_HEARTBEAT
    ) -> TaskQueue:
        """The task queue the worker gave this Job's pod (MSTC_TASKS_URL, MSTC_TASK_QUEUE)."""
        source = os.environ if env is None else env
        url, name = source.get(TASKS_URL_ENV, ""), source.get(TASK_QUEUE_ENV, "")
        if not url or not name:
            raise ConfigError(
                f"{TASKS_URL_ENV} and {TASK_QUEUE_ENV} are not set: the worker sets them in the "
                'pods of a Job whose request named a task queue ("taskQueue": "NAME")'
            )
        return cls(url, name, heartbeat_seconds=heartbeat_seconds)

    @property
    def queue(self) -> str:
        """The RabbitMQ queue behind this task queue."""
        return self._channel.queue

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add a task; returns once RabbitMQ has it stored. The queue is unbounded, so
        `block` and `timeout` (kept for `queue.Queue`'s signature) never matter."""
        self._channel.publish(_encode(item))

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take a task (not yet acknowledged: call `task_done` when it is processed).

        Raises `queue.Empty` when none is ready (block=False) or none came within `timeout`.
        A task body that is not JSON (not put by a TaskQueue) is dropped and reported.
        """
        taken = self._channel.take(timeout if block else 0)
        if taken is None:
            raise queue.Empty
        tag, body = taken
        try:
            item = json.loads(body)
        except ValueError as exc:
            self._channel.reject(tag)
            raise TaskNotJson(f"task queue {self.name}: dropped a task that is not JSON") from exc
        self._taken.append(tag)
        return item

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def task_done(self) -> None:
        """Mark the oldest task taken and not yet done as processed (acknowledge it)."""
        if not self._taken:
            raise ValueError("task_done() called more times than tasks were taken")
        self._channel.ack(self._taken[0])
        self._taken.popleft()

    def qsize(self) -> int:
        """Ready tasks: put and not taken (tasks being processed are not counted)."""
        return self._channel.ready()

    def empty(self) -> bool:
        """Whether no task is ready (others may still be processing theirs)."""
        return self.qsize() == 0

    def join(self, timeout: float | None = None) -> None:
        """Wait until no task is ready and this TaskQueue has done every task it took.

        Raises WaitTimeout after `timeout` seconds, and ValueError if this TaskQueue itself
        holds tasks (it alone could mark them done, so the wait would never end).
        """
        if self._taken:
            raise ValueError(f"join() with {len(self._taken)} task(s) taken and not done")
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.05
        while self._channel.ready() > 0:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(f"task queue {self.name}: tasks still ready after {timeout} s")
            # RabbitMQ tells a client nothing when a queue runs empty: ask again, less often.
            self._channel.idle(pause if left is None else min(pause, left))
            pause = min(_JOIN_POLL_MAX, pause * 2)

    def close(self) -> None:
        """Close the connection; tasks taken and not done go back to the queue."""
        self._channel.close()

    def __enter__(self) -> TaskQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
