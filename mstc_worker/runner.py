"""A worker process: turns requests into Jobs and finished Jobs into outcomes.

Owns everything that waits on Kubernetes, so that no wait can ever starve the AMQP heartbeat
in the main process. Each process holds its own Kubernetes and MinIO clients (created after
spawn) and exactly one Job watch and one Pod watch, whatever the number of Jobs in flight;
watch events are fanned out to the Jobs this process is responsible for.

Who finishes a Job: every process of every replica sees every ending; the process whose
shard (a hash of the Job's name) covers it claims the Job on the API server with an
optimistic update, and only the winner reads the log, stores it and reports the outcome.
The Job keeps its finalizer until the service confirms the reply was published, so a crash
at any moment leaves a Job that the next worker finishes. The outcome is recorded (`replies`)
before the reply goes out, and a request whose Job is gone but whose reply is on record is
answered from the record instead of being run again. A periodic sweep retries what an
event-driven attempt could not finish (a claim left by a dead worker goes stale); it reads
the watch's view of the shard, not the API server. A process decodes only the watch events
of its own shard's Jobs and pods. A claim holds as long as its holder works: from the claim
until the Job is let go after its reply, the process renews it (`claims`), so a slow finish
is never taken for a dead one and finished (and replied) twice.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import socket
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from typing import Any, Protocol

from mstc_worker import job_access, manifest, task_queues
from mstc_worker.cancel import Canceller, cancel_asked
from mstc_worker.claims import ClaimKeeper
from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.kube import FAIL_FAST_REASONS, JobState, JobView, JobWatcher, KubeClient, PodView
from mstc_worker.logs import configure_logging
from mstc_worker.messages import (
    CancelAnswered,
    CancelJob,
    JobAccepted,
    JobEnded,
    JobFinished,
    JobProgress,
    JobReceived,
    JobStartFailed,
    ReleaseJob,
    StartJob,
    StopWorker,
    Trouble,
    TroubleKind,
    WorkerReady,
    WorkerToService,
)
from mstc_worker.outcome import OutcomeBuilder, pod_order
from mstc_worker.protocol import Outcome, Request, error_outcome
from mstc_worker.rabbit_admin import RabbitAdmin, RabbitAdminRejected, RabbitAdminUnavailable
from mstc_worker.replies import ReplyRecords
from mstc_worker.settings import Settings
from mstc_worker.storage import Storage, StorageRejected, StorageUnavailable

__all__ = ["Outbox", "Runner", "shard_of", "worker_main"]

log = logging.getLogger(__name__)

_ENDED = {JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT}


def shard_of(job_name: str, count: int) -> int:
    """The worker process (0..count-1) that finishes `job_name`; stable across restarts."""
    return zlib.crc32(job_name.encode()) % count


class Outbox(Protocol):
    """Where a worker process says things to the service (the pool gives it)."""

    def put(self, message: WorkerToService) -> None: ...


def worker_main(
    settings: Settings, index: int, count: int, inbox: Queue[Any], outbox: Outbox
) -> None:
    """Entry point of a spawned worker process."""
    configure_logging(settings, process_name=f"worker-{index}")
    _exit_with_parent()
    runner = Runner(
        settings,
        index=index,
        count=count,
        send=outbox.put,
        kube=KubeClient(settings),
        storage=Storage(settings),
        rabbit=RabbitAdmin(settings) if settings.task_queues else None,
    )
    runner.start()
    try:
        while True:
            message = inbox.get()
            if isinstance(message, StopWorker):
                break
            runner.handle(message)
    finally:
        runner.stop()


def _exit_with_parent() -> None:
    """End this process as soon as the service's process is gone, however it went.

    A `kill -9` of the service leaves nobody to read what this process says or to send it
    work, yet it would go on claiming Jobs it can never reply for (their claims then have
    to go stale before another worker may finish them). In a pod the kernel ends the whole
    container anyway; on a laptop, in tests and under other supervisors this does it.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        log.error("the service process is gone; worker process exiting")
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Runner:
    """The work of one worker process, given its clients and a way to talk to the service."""

    def __init__(
        self,
        settings: Settings,
        *,
        index: int,
        count: int,
        send: Callable[[WorkerToService], None],
        kube: KubeClient,
        storage: Storage,
        rabbit: RabbitAdmin | None = None,
    ) -> None:
        self._settings = settings
        self._rabbit = rabbit  # None: task queues are off (requests naming one are rejected)
        self._index, self._count = index, count
        self._send = send
        self._kube, self._storage = kube, storage
        self._holder = f"{socket.gethostname()}/{os.getpid()}"
        # Starting and finishing get threads of their own: a burst of requests fills the
        # starting pool, and a Job that ends meanwhile must not wait behind them for its reply.
        self._starting = ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"w{index}")
        self._finishing = ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"f{index}")
        self._lock = threading.Lock()
        self._mine: set[str] = set()  # Jobs this process started: they count as in flight
        self._busy: set[str] = set()  # Jobs being finished, or whose reply is on its way
        self._replied: set[str] = set()  # reply confirmed, finalizer not yet removed
        # Let go of (name -> uid), while the watch may still show the finalizer: its older
        # views of such a Job must not start another finish, which only costs API calls.
        self._released: dict[str, str] = {}
        self._claimed: dict[str, JobView] = {}  # the claim's answer, until the Job is let go
        self._told_running: set[str] = set()  # "running" said (best effort, per process)
        self._stuck: dict[str, PodView] = {}
        self._ended_pods: dict[str, PodView] = {}  # from the pod watch, for this shard's Jobs
        self._stop = threading.Event()
        self._outcomes = OutcomeBuilder(kube, storage, self._storage_trouble)
        self._records = ReplyRecords(settings, storage)
        self._canceller = Canceller(kube, self._records.find)
        self._watcher = JobWatcher(
            kube, self._on_job, self._on_pod, self._on_job_gone, keep=self._in_shard
        )
        self._sweeper = threading.Thread(target=self._sweep, name=f"sweep-{index}", daemon=True)
        self._claims = ClaimKeeper(
            kube,
            self._holder,
            stale_after_s=settings.claim_stale_seconds,
            stop=self._stop,
            on_trouble=lambda: self._emit(Trouble(self._index, "kube", "transient")),
            name=f"renew-{index}",
        )

    def _in_shard(self, job_name: str) -> bool:
        return shard_of(job_name, self._count) == self._index

    def _emit(self, message: WorkerToService) -> None:
        self._send(message)

    def _storage_trouble(self, kind: TroubleKind) -> None:
        self._emit(Trouble(self._index, "storage", kind))

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._watcher.start()
        self._sweeper.start()
        self._claims.start()

    def stop(self) -> None:
        self._stop.set()
        self._watcher.stop()
        self._starting.shutdown(wait=True, cancel_futures=False)
        self._finishing.shutdown(wait=True, cancel_futures=False)

    def handle(self, message: StartJob | ReleaseJob | CancelJob) -> None:
        if isinstance(message, StartJob):
            # Said before any work on it: if this process dies now, the service knows the
            # request may be what killed it (and one still in the inbox is not).
            self._emit(JobReceived(self._index, message.key))
            self._starting.submit(self._start_job, message)
        elif isinstance(message, CancelJob):
            self._starting.submit(self._cancel, message)
        else:
            self._finishing.submit(self._release, message.job_name, message.mark_final_event)

    def _cancel(self, message: CancelJob) -> None:
        """Mark the Job for cancel; whichever process holds its shard stops it (`_on_job`)."""
        answer = self._canceller.cancel(message.command)
        self._emit(CancelAnswered(self._index, message.key, answer))

    # --- creating ---------------------------------------------------------------------------

    def _start_job(self, start: StartJob) -> None:
        request_id = start.request_id  # read first: a stand-in start fails on it (fault hook)
        recorded = self._records.find(request_id)
        if recorded is not None:  # answered before, and its Job may be gone: not run again
            self._answer_again(start, recorded)
            return
        job = manifest.build_job(
            start.request, request_id=start.request_id, settings=self._settings, route=start.route
        )
        name = job["metadata"]["name"]
        try:
            view, created = self._kube.create_job(job)
        except (PermanentError, TransientError) as exc:
            transient = isinstance(exc, TransientError)
            self._emit(Trouble(self._index, "kube", "transient" if transient else "rejected"))
            log.warning("job %s not created: %s", name, exc)
            outcome = error_outcome(exc, namespace=self._settings.namespace)
            self._emit(JobStartFailed(self._index, start.key, outcome, transient))
            return
        owner = view.annotations.get(manifest.REQUEST_ID_ANNOTATION)
        if not created and owner != start.request_id:
            outcome = error_outcome(
                PermanentError(f"Job {name} exists already and belongs to request {owner!r}"),
                namespace=self._settings.namespace,
            )
            self._emit(JobStartFailed(self._index, start.key, outcome, False))
            return
        if not created and manifest.FINALIZER not in view.finalizers:
            # Answered and let go between the look at the records and the create.
            self._answer_again(start, self._records.find(request_id), name)
            return
        if cancel_asked(view):
            log.info("job %s: cancelled before it started; its stop answers the request", name)
        elif view.suspended and not self._start_with_credentials(start, view, created=created):
            return
        with self._lock:
            self._mine.add(name)
        log.info("job %s %s in %s", name, "created" if created else "adopted", view.namespace)
        self._emit(JobAccepted(self._index, start.key, name, adopted=not created))

    def _answer_again(self, start: StartJob, outcome: Outcome | None, name: str = "") -> None:
        """Answer a request whose Job ran and was answered already, from its record."""
        if outcome is None:
            outcome = error_outcome(
                PermanentError(f"Job {name} ran for this request and was answered already; "
                               "that answer is no longer on record"),
                namespace=self._settings.namespace,
            )  # fmt: skip
        log.info("request %s answered again from its record (Job %s)", start.request_id,
                 outcome.job_name or name)  # fmt: skip
        self._emit(JobStartFailed(self._index, start.key, outcome, False, again=True))

    def _start_with_credentials(self, start: StartJob, job: JobView, *, created: bool) -> bool:
        """Give a suspended Job its own MinIO credentials, then resume it; False if that failed.

        The Job was created suspended so that no pod starts before its Secret exists, and
        the Secret names the Job's uid as its owner, so it goes when the Job goes. On failure
        the request is reported as not started (a transient failure is tried again by the
        service's rules); a Job this call created never ran and is deleted and let go. An
        adopted one is left: another delivery of the request may be resuming it right now,
        and the next delivery adopts it again.
        """
        try:
            self._give_credentials(start.request, job)
        except (PermanentError, TransientError) as exc:
            transient = isinstance(exc, TransientError)
            kind: TroubleKind = "transient" if transient else "rejected"
            storage = isinstance(exc, StorageUnavailable | StorageRejected)
            if not isinstance(exc, RabbitAdminUnavailable | RabbitAdminRejected):
                self._emit(Trouble(self._index, "storage" if storage else "kube", kind))
            log.warning("job %s: no credentials, not started: %s", job.name, exc)
            if created:
                self._abandon(job.name)
                self._remove_task_user(job.name)
            outcome = error_outcome(exc, namespace=self._settings.namespace)
            self._emit(JobStartFailed(self._index, start.key, outcome, transient))
            return False
        return True

    def _give_credentials(self, request: Request, job: JobView) -> None:
        minio: dict[str, str] = {}
        if not self._settings.job_root_credentials:
            policy = job_access.session_policy(
                request.input_bucket, request.output_bucket, request.prefix
            )
            seconds = job_access.credential_seconds(request.timeout_minutes * 60)
            key = self._storage.job_credentials(policy, seconds)
            minio = {
                "access_key": key.access_key,
                "secret_key": key.secret_key,
                "session_token": key.session_token,
            }
        tasks_url = None
        if request.task_queue is not None:
            tasks_url = self._task_user(request.task_queue, job)
        secret = job_access.credentials_secret(job.name, job.uid, **minio, tasks_url=tasks_url)
        self._kube.create_secret(secret)
        self._kube.resume_job(job.name)

    def _task_user(self, queue: str, job: JobView) -> str:
        """Make the Job's RabbitMQ user for task queue `queue`; the URL its pods log in with."""
        settings = self._settings
        if self._rabbit is None or settings.tasks_admin_pass is None:
            raise PermanentError("this worker offers no task queues (MSTC_TASKS_* are unset)")
        user = task_queues.user_name(settings.namespace, job.name)
        password = task_queues.user_password(settings.tasks_admin_pass.get_secret_value(), job.uid)
        self._rabbit.grant(user, password, task_queues.grant_for(queue))
        return task_queues.tasks_url(
            settings.work_queue_host, settings.work_queue_port, settings.amqp_vhost, user, password
        )

    def _remove_task_user(self, name: str) -> None:
        """Delete a Job's task-queue user, if task queues are on (best effort: the sweep
        removes what is left)."""
        if self._rabbit is None:
            return
        try:
            self._rabbit.remove(task_queues.user_name(self._settings.namespace, name))
        except (PermanentError, TransientError) as exc:
            log.warning("job %s: task-queue user not removed yet, the sweep retries: %s", name, exc)

    def _sweep_task_users(self, known: list[JobView]) -> None:
        """Remove the task-queue users of this shard's Jobs that were let go or are gone.

        The watch's view only picks the candidates; each is checked on the API server, since
        a user is made right after its Job, which the watch may not show yet.
        """
        if self._rabbit is None:
            return
        namespace = self._settings.namespace
        owing = {job.name for job in known if manifest.FINALIZER in job.finalizers}
        try:
            for user in self._rabbit.users(f"{task_queues.USER_PREFIX}{namespace}."):
                name = task_queues.job_of_user(user, namespace)
                if name is None or not self._in_shard(name) or name in owing:
                    continue
                job = self._kube.get_job(name)
                if job is None or manifest.FINALIZER not in job.finalizers:
                    self._rabbit.remove(user)
        except (PermanentError, TransientError) as exc:
            log.warning("task-queue users not swept: %s", exc)

    def _abandon(self, name: str) -> None:
        """Delete a Job that never ran and drop its finalizer (best effort)."""
        try:
            self._kube.delete_job(name)
            self._kube.release(name)
        except (PermanentError, TransientError) as exc:
            log.warning("job %s: could not delete the unstarted Job: %s", name, exc)

    # --- watching -------------------------------------------------------------------------

    def _on_job(self, job: JobView) -> None:
        if manifest.FINALIZER not in job.finalizers:
            self._forget(job.name)
            return
        if job.state in _ENDED or cancel_asked(job):
            self._finish_soon(job.name, job)
        elif job.ready > 0:
            self._tell_running(job)

    def _tell_running(self, job: JobView) -> None:
        """Say once that the Job runs: its event, and to a client that asked (a restart may
        say it again)."""
        with self._lock:
            if job.name in self._told_running:
                return
            self._told_running.add(job.name)
        self._emit(
            JobProgress(
                self._index,
                job.name,
                "running",
                reply_to=job.annotations.get(manifest.REPLY_TO_ANNOTATION, ""),
                correlation_id=job.annotations.get(manifest.CORRELATION_ID_ANNOTATION),
                facts=manifest.facts_of_job(job.annotations),
                tell_client=job.annotations.get(manifest.PROGRESS_ANNOTATION) == "true",
            )
        )

    def _on_pod(self, pod: PodView) -> None:
        if pod.job_name is None:  # the watcher delivers only this shard's Jobs and pods
            return
        if pod.exit_code is not None:
            # Kept so finishing needs no pod list; the latest-started pod is the one to report.
            with self._lock:
                known = self._ended_pods.get(pod.job_name)
                if known is None or pod_order(pod) >= pod_order(known):
                    self._ended_pods[pod.job_name] = pod
        if pod.waiting_reason not in FAIL_FAST_REASONS:
            return
        with self._lock:
            self._stuck[pod.job_name] = pod
        self._finish_soon(pod.job_name)

    def _on_job_gone(self, job: JobView) -> None:
        self._forget(job.name)

    def _forget(self, name: str) -> None:
        with self._lock:
            mine = name in self._mine
            self._mine.discard(name)
            self._stuck.pop(name, None)
            self._ended_pods.pop(name, None)
            self._claimed.pop(name, None)
            self._told_running.discard(name)
            self._released.pop(name, None)
        self._claims.drop(name)
        if mine:
            self._emit(JobEnded(self._index, name))

    def _sweep(self) -> None:
        announced = False
        while not self._stop.wait(0 if not announced else self._settings.resync_seconds):
            if not announced:
                self._watcher.synced.wait()
                self._emit(WorkerReady(self._index))
                announced = True
                continue
            # The watch's own view of this shard's Jobs: as current as a list would be
            # (a broken watch lists again by itself), at no cost to the API server.
            known = self._watcher.known_jobs()
            with self._lock:
                stuck = set(self._stuck)
                # Forget what the watch has caught up with (also when it did so first).
                owing = {job.name: job.uid for job in known if manifest.FINALIZER in job.finalizers}
                self._released = {
                    name: uid for name, uid in self._released.items() if owing.get(name) == uid
                }
            for job in known:
                owed = manifest.FINALIZER in job.finalizers
                ended = job.state in _ENDED or job.name in stuck or cancel_asked(job)
                if owed and ended:
                    self._finish_soon(job.name)
            self._sweep_task_users(known)

    # --- finishing ------------------------------------------------------------------------

    def _finish_soon(self, name: str, seen: JobView | None = None) -> None:
        """Finish `name` on the finishing threads; `seen` is the watch's fresh view, if any."""
        with self._lock:
            if name in self._busy or self._let_go(name, seen):
                return
            self._busy.add(name)
            replied = name in self._replied
        # A Job whose reply went out only needs letting go; finishing it again would reply twice.
        if replied:
            self._finishing.submit(self._release, name)
        else:
            self._finishing.submit(self._finish, name, seen)

    def _let_go(self, name: str, seen: JobView | None) -> bool:
        """Whether this Job (this very one, when `seen` says which) was let go already."""
        uid = self._released.get(name)
        return uid is not None and (seen is None or seen.uid == uid)

    def _finish(self, name: str, seen: JobView | None = None) -> None:
        reported = False
        try:
            reported = self._try_finish(name, seen)
        except (TransientError, PermanentError) as exc:
            self._emit(Trouble(self._index, "kube", "transient"))
            log.warning("job %s: finishing failed, the sweep retries: %s", name, exc)
        except Exception:
            log.exception("job %s: finishing failed, the sweep retries", name)
        finally:
            if not reported:
                with self._lock:
                    self._busy.discard(name)
                    self._claimed.pop(name, None)
                # Not working on it any more: the claim is not renewed (the sweep's retry
                # claims it again, which renews it).
                self._claims.drop(name)

    def _try_finish(self, name: str, seen: JobView | None) -> bool:
        # A view straight from the watch is fresh enough: the claim is conditional on its
        # resourceVersion, so a stale one only costs the re-read the claim does anyway.
        job = seen or self._kube.get_job(name)
        if job is None or manifest.FINALIZER not in job.finalizers:
            return False
        with self._lock:
            stuck = self._stuck.get(name)
        if job.state not in _ENDED and stuck is None and not cancel_asked(job):
            return False
        claimed = self._kube.claim(
            job, self._holder, stale_after_s=self._settings.claim_stale_seconds
        )
        if claimed is None:
            return False  # another worker is on it
        if manifest.FINALIZER not in claimed.finalizers:
            return False  # replied and let go already (the view we started from was old)
        with self._lock:
            self._claimed[name] = claimed
        self._claims.hold(name)
        # A Job that ended on its own before the cancel reached it keeps its own outcome.
        cancelled = claimed.state not in _ENDED and stuck is None and cancel_asked(claimed)
        if stuck is not None or claimed.state is JobState.TIMED_OUT:
            # Stop the cluster retrying; the finalizer keeps the record until the reply is out.
            self._kube.delete_job(name)
        outcome = self._outcome(claimed, stuck, cancelled=cancelled)
        if cancelled:  # after the log so far is stored: stopping deletes the pod
            self._kube.stop_job(name)
        log.info("job %s ended: %s %s", name, outcome.status.value, outcome.reason or "")
        # Before the reply: whoever sees the request again after the Job is gone answers it so.
        self._records.save(claimed.annotations.get(manifest.REQUEST_ID_ANNOTATION, ""), outcome)
        self._emit(
            JobFinished(
                self._index,
                name,
                outcome,
                reply_to=claimed.annotations.get(manifest.REPLY_TO_ANNOTATION, ""),
                correlation_id=claimed.annotations.get(manifest.CORRELATION_ID_ANNOTATION),
                facts=manifest.facts_of_job(claimed.annotations),
                final_event_sent=claimed.annotations.get(manifest.FINAL_EVENT_ANNOTATION)
                == manifest.FINAL_EVENT_SENT,
            )
        )
        return True

    def _outcome(self, job: JobView, stuck: PodView | None, *, cancelled: bool) -> Outcome:
        """The Job's outcome; its end was decided by its conditions, a stuck pod or a cancel.

        A single-pod Job's ended pod is usually known from the pod watch, which saves a
        list; a fan-out Job's log and failing pod need all its pods, and a cancelled Job's
        pod has not ended, so they are listed.
        """
        with self._lock:
            pod = self._ended_pods.get(job.name)
        if pod is not None and stuck is None and not cancelled and not job.fan_out:
            return self._outcomes.build(job, [pod], stuck)
        pods = self._kube.job_pods(job.name)
        return self._outcomes.build(job, pods, stuck, cancelled=cancelled)

    def _release(self, name: str, mark_final_event: bool = False) -> None:
        with self._lock:
            self._replied.add(name)
            known = self._claimed.get(name)
        # Before the finalizer goes: a Job let go has no RabbitMQ user left (unless the call
        # failed; the sweep removes it then). The reply is out and the pods have ended.
        if known is None or manifest.TASK_QUEUE_ANNOTATION in known.annotations:
            self._remove_task_user(name)
        try:
            if mark_final_event:
                self._mark_final_event(name)
            self._kube.release(name, known=known)
        except (TransientError, PermanentError) as exc:
            log.warning("job %s: finalizer not removed yet, the sweep retries: %s", name, exc)
        else:
            with self._lock:
                self._replied.discard(name)
                self._stuck.pop(name, None)
                self._claimed.pop(name, None)
                if known is not None:
                    self._released[name] = known.uid
            self._claims.drop(name)
        finally:
            with self._lock:
                self._busy.discard(name)

    def _mark_final_event(self, name: str) -> None:
        """Write on the Job that its final event went out, before it is let go.

        Best effort: unwritten, only a crash before the release (which then replies again)
        would say the event again too; the release itself is what must not wait on it.
        """
        try:
            self._kube.annotate(name, manifest.FINAL_EVENT_ANNOTATION, manifest.FINAL_EVENT_SENT)
        except (TransientError, PermanentError) as exc:
            log.warning("job %s: final event not marked on the Job: %s", name, exc)
