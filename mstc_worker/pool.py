"""The worker processes of one replica: start, talk to, watch over and stop them.

Owns process supervision, so the service only deals in requests. Processes are spawned, not
forked, so each builds its own Kubernetes and MinIO clients from a clean interpreter. A process
that dies (a crash, the OOM killer, a `kill -9`) is started again under the same index, which
keeps its shard of Jobs covered; the service hears of it as a `WorkerDied` message so it can
deal with the requests that process was holding.

Each process the pool starts is an incarnation, numbered per index. `send` says which
incarnation a message went to, and each incarnation writes to a pipe of its own, without a
buffering thread: what it said before it died is all in the pipe, and `messages` yields all
of it before the `WorkerDied` of that incarnation. The service can therefore tell a request
the dead process had taken (it said `JobReceived`) from one it never read.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from mstc_worker.messages import (
    PoolMessage,
    ServiceToWorker,
    StopWorker,
    WorkerDied,
    WorkerToService,
)
from mstc_worker.runner import Outbox, worker_main
from mstc_worker.settings import Settings

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

ProcessMain = Callable[
    [Settings, int, int, "multiprocessing.queues.Queue[ServiceToWorker]", Outbox], None
]
"""What a worker process runs: `runner.worker_main`, unless a test gives a stand-in."""


class _Outbox:
    """A process's way back to the pool: each message is in the pipe when `put` returns.

    (multiprocessing's Queue writes from a background thread, so a process killed just
    after saying something may have said nothing.) The lock, made in the process that
    writes, keeps the threads of one process from interleaving their writes.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def __getstate__(self) -> Connection:
        return self._conn

    def __setstate__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # a lock does not cross processes: a new one

    def put(self, message: WorkerToService) -> None:
        with self._lock:
            self._conn.send(message)


@dataclass(frozen=True, eq=False)
class _Incarnation:
    """One started process under an index, with its inbox and the pipe it answers on."""

    number: int
    process: BaseProcess
    inbox: multiprocessing.queues.Queue[ServiceToWorker]
    answers: Connection


class WorkerPool:
    """`settings.processes` worker processes, each answering on a pipe of its own."""

    def __init__(self, settings: Settings, *, main: ProcessMain = worker_main) -> None:
        self._settings = settings
        self._main = main
        self._ctx = multiprocessing.get_context("spawn")
        self._numbers = [itertools.count(1) for _ in range(self.size)]
        self._workers: list[_Incarnation] = []
        self._stopping = False
        self._ended: set[_Incarnation] = set()  # exited while stopping: not watched any more
        # `stop` writes here so that `messages` ends at once, wherever it waits.
        self._wake_reader, self._wake_writer = self._ctx.Pipe(duplex=False)

    @property
    def size(self) -> int:
        return self._settings.processes

    def start(self) -> None:
        self._workers = [self._spawn(index) for index in range(self.size)]

    def _spawn(self, index: int) -> _Incarnation:
        inbox: multiprocessing.queues.Queue[ServiceToWorker] = self._ctx.Queue()
        answers, writer = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=self._main,
            args=(self._settings, index, self.size, inbox, _Outbox(writer)),
            name=f"worker-{index}",
            daemon=True,
        )
        proc.start()
        writer.close()  # the process holds its own copy: its end is the pipe's end of file
        return _Incarnation(next(self._numbers[index]), proc, inbox, answers)

    def send(self, index: int, message: ServiceToWorker) -> int:
        """Put `message` in process `index`'s inbox; the incarnation it was given to."""
        worker = self._workers[index]  # one read: the inbox and its number go together
        worker.inbox.put(message)
        return worker.number

    def all_alive(self) -> bool:
        return all(worker.process.is_alive() for worker in self._workers)

    def messages(self) -> Iterator[PoolMessage]:
        """What the processes say, plus a `WorkerDied` for each one restarted; ends on stop."""
        while True:
            watched = [(i, w) for i, w in enumerate(self._workers) if w not in self._ended]
            answers = {w.answers: i for i, w in watched if not w.answers.closed}
            sentinels = {w.process.sentinel: i for i, w in watched}
            ready = multiprocessing.connection.wait([self._wake_reader, *answers, *sentinels])
            if self._wake_reader in ready:
                return
            for conn in ready:
                if conn in answers:
                    yield from self._read(answers[conn])
            for sentinel in ready:
                if sentinel in sentinels:
                    index = sentinels[sentinel]
                    yield from self._read(index)  # all it said before it died comes first
                    yield from self._restart(index)

    def _read(self, index: int) -> Iterator[WorkerToService]:
        """What process `index` has written so far (never waits for more)."""
        answers = self._workers[index].answers
        while not answers.closed and answers.poll():
            try:
                message: WorkerToService = answers.recv()
            except (EOFError, OSError):  # it ended, maybe in the middle of a message
                answers.close()
                return
            yield message

    def _restart(self, index: int) -> Iterator[WorkerDied]:
        dead = self._workers[index]
        dead.process.join()
        if not dead.answers.closed:
            dead.answers.close()
        if self._stopping:
            self._ended.add(dead)
            return
        log.error("worker-%d died (exit code %s); starting it again", index, dead.process.exitcode)
        self._workers[index] = self._spawn(index)
        yield WorkerDied(index, dead.number, dead.process.exitcode)

    def stop(self, timeout_s: float = 10) -> None:
        self._stopping = True
        for worker in self._workers:
            worker.inbox.put(StopWorker())
        for worker in self._workers:
            worker.process.join(timeout=timeout_s)
            if worker.process.is_alive():
                worker.process.kill()
        self._wake_writer.send(None)  # ends messages()
