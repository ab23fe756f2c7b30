"""The worker processes of one replica: start, talk to, watch over and stop them.

Owns process supervision, so the service only deals in requests. Processes are spawned, not
forked, so each builds its own Kubernetes and MinIO clients from a clean interpreter. A process
that dies (a crash, the OOM killer, a `kill -9`) is started again under the same index, which
keeps its shard of Jobs covered; the service hears of it as a `WorkerDied` message so it can
deal with the requests that process was holding.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.queues
import queue
from collections.abc import Iterator
from multiprocessing.process import BaseProcess

from mstc_worker.messages import PoolMessage, ServiceToWorker, StopWorker, WorkerDied
from mstc_worker.runner import worker_main
from mstc_worker.settings import Settings

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

_CHECK_EVERY_S = 0.5


class WorkerPool:
    """`settings.processes` worker processes sharing one outbox back to the service."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        # The outbox also carries None (the end, from `stop`); nothing else but messages.
        self._outbox: multiprocessing.queues.Queue[PoolMessage | None] = self._ctx.Queue()
        self._inboxes: list[multiprocessing.queues.Queue[ServiceToWorker]] = []
        self._processes: list[BaseProcess] = []
        self._stopping = False

    @property
    def size(self) -> int:
        return self._settings.processes

    def start(self) -> None:
        for index in range(self.size):
            inbox, proc = self._spawn(index)
            self._inboxes.append(inbox)
            self._processes.append(proc)

    def _respawn(self, index: int) -> None:
        self._inboxes[index], self._processes[index] = self._spawn(index)

    def _spawn(
        self, index: int
    ) -> tuple[multiprocessing.queues.Queue[ServiceToWorker], BaseProcess]:
        inbox: multiprocessing.queues.Queue[ServiceToWorker] = self._ctx.Queue()
        proc = self._ctx.Process(
            target=worker_main,
            args=(self._settings, index, self.size, inbox, self._outbox),
            name=f"worker-{index}",
            daemon=True,
        )
        proc.start()
        return inbox, proc

    def send(self, index: int, message: ServiceToWorker) -> None:
        self._inboxes[index].put(message)

    def all_alive(self) -> bool:
        return all(proc.is_alive() for proc in self._processes)

    def messages(self) -> Iterator[PoolMessage]:
        """What the processes say, plus a `WorkerDied` for each one restarted; ends on stop."""
        while True:
            try:
                message = self._outbox.get(timeout=_CHECK_EVERY_S)
            except queue.Empty:
                pass
            else:
                if message is None:
                    return
                yield message
            if not self._stopping:
                yield from self._restart_dead()

    def _restart_dead(self) -> Iterator[WorkerDied]:
        for index, proc in enumerate(self._processes):
            if not proc.is_alive():
                log.error("worker-%d died (exit code %s); starting it again", index, proc.exitcode)
                self._respawn(index)
                yield WorkerDied(index, proc.exitcode)

    def stop(self, timeout_s: float = 10) -> None:
        self._stopping = True
        for inbox in self._inboxes:
            inbox.put(StopWorker())
        for proc in self._processes:
            proc.join(timeout=timeout_s)
            if proc.is_alive():
                proc.kill()
        self._outbox.put(None)  # ends messages()
