"""The Kubernetes adapter against the real API server, Job controller and KWOK-simulated pods.

Each test gets a fresh namespace. Pods' fates are chosen with the stack's annotations
(tests.support.kube), and every wait is on a watch or on a watcher's callbacks, never a sleep.
"""

from __future__ import annotations

import queue
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from mstc_worker.errors import TransientError
from mstc_worker.kube import (
    CLAIMED_AT_ANNOTATION,
    CLAIMED_BY_ANNOTATION,
    FINALIZER,
    JobState,
    JobView,
    JobWatcher,
    KubeClient,
    KubeRejected,
    KubeUnavailable,
    PodView,
)
from mstc_worker.manifest import REQUEST_ID_ANNOTATION, ReplyRoute, build_job
from mstc_worker.messages import JobFinished, StartJob
from mstc_worker.protocol import Request
from mstc_worker.runner import Runner
from mstc_worker.settings import Settings, load_settings
from mstc_worker.storage import Storage
from tests.support.kube import EXIT_CODE, RUN_FOR, WAITING_REASON, wait_gone, wait_job, watch_until
from tests.support.stack import StackInfo
from tests.worker.tcp_proxy import TcpProxy

pytestmark = pytest.mark.stack

T = TypeVar("T")
Manifest = dict[str, Any]


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def settings(stack: StackInfo, namespace: str) -> Settings:
    return load_settings({**stack.env, "MSTC_NAMESPACE": namespace})


@pytest.fixture
def batch(api_client: k8s.ApiClient) -> k8s.BatchV1Api:
    return k8s.BatchV1Api(api_client)


@pytest.fixture
def core(api_client: k8s.ApiClient) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(api_client)


@pytest.fixture(autouse=True)
def _kubeconfig(monkeypatch: pytest.MonkeyPatch, stack: StackInfo) -> None:
    """KubeClient builds its own ApiClient from KUBECONFIG, as in a worker process."""
    monkeypatch.setenv("KUBECONFIG", str(stack.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def kube(settings: Settings, batch: k8s.BatchV1Api, namespace: str) -> Iterator[KubeClient]:
    yield KubeClient(settings)
    # Jobs held by the reply-pending finalizer would keep the namespace from being deleted.
    for job in batch.list_namespaced_job(namespace).items:
        if job.metadata.finalizers:
            batch.patch_namespaced_job(
                job.metadata.name, namespace, {"metadata": {"finalizers": None}}
            )


def job_manifest(
    settings: Settings,
    *,
    run_for: str | None = None,
    exit_code: int | None = None,
    waiting_reason: str | None = None,
    deadline_s: int | None = None,
    finalizer: bool = True,
) -> Manifest:
    """A Job as the worker builds it, with the pod's fate chosen by the stack's annotations."""
    annotations = {
        key: value
        for key, value in (
            (RUN_FOR, run_for),
            (EXIT_CODE, None if exit_code is None else str(exit_code)),
            (WAITING_REASON, waiting_reason),
        )
        if value is not None
    }
    request = Request(
        image="example.invalid/mstc-test:1",
        job_name="kube-test",
        timeout_minutes=5,
        input_bucket="in",
        output_bucket="out",
        annotations=annotations,
    )
    manifest = build_job(request, request_id=str(uuid.uuid4()), settings=settings)
    if deadline_s is not None:
        manifest["spec"]["activeDeadlineSeconds"] = deadline_s
    # The builder adds the finalizer; tests that want plain Kubernetes deletion drop it.
    manifest["metadata"]["finalizers"] = [FINALIZER] if finalizer else []
    # The runner resumes a Job once its credentials Secret exists; these Jobs run at once.
    manifest["spec"].pop("suspend", None)
    return manifest


def wait_pod(core: k8s.CoreV1Api, namespace: str, job: str, check: Callable[[Any], bool]) -> None:
    watch_until(
        core.list_namespaced_pod,
        lambda _type, pod: check(pod),
        namespace=namespace,
        label_selector=f"job-name={job}",
    )


def container_waiting(reason: str) -> Callable[[Any], bool]:
    def check(pod: Any) -> bool:
        statuses = pod.status.container_statuses or []
        return any(s.state.waiting and s.state.waiting.reason == reason for s in statuses)

    return check


class Recorder:
    """Collects a JobWatcher's callbacks; tests wait on its condition, not on the clock."""

    def __init__(self, *, failing_pod_callback: bool = False) -> None:
        self._cond = threading.Condition()
        self.jobs: list[JobView] = []
        self.pods: list[PodView] = []
        self.gone: list[JobView] = []
        self._failing = failing_pod_callback

    def on_job(self, job: JobView) -> None:
        self._add(self.jobs, job)

    def on_pod(self, pod: PodView) -> None:
        self._add(self.pods, pod)
        if self._failing:
            raise RuntimeError("a callback bug must not kill the watch")

    def on_job_gone(self, job: JobView) -> None:
        self._add(self.gone, job)

    def _add(self, into: list[Any], view: Any) -> None:
        with self._cond:
            into.append(view)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], T], timeout: float = 60) -> T:
        with self._cond:
            result = self._cond.wait_for(predicate, timeout)
        assert result, f"not seen within {timeout} s; jobs={self.jobs} gone={self.gone}"
        return result

    def job_in(self, name: str, state: JobState) -> JobView | None:
        return next((j for j in self.jobs if j.name == name and j.state is state), None)


@pytest.fixture
def make_watcher(kube: KubeClient) -> Iterator[Callable[..., JobWatcher]]:
    watchers: list[JobWatcher] = []

    def make(recorder: Recorder, client: KubeClient | None = None, **kwargs: Any) -> JobWatcher:
        watcher = JobWatcher(
            client or kube, recorder.on_job, recorder.on_pod, recorder.on_job_gone, **kwargs
        )
        watchers.append(watcher)
        watcher.start()
        return watcher

    yield make
    for watcher in watchers:
        watcher.stop()


# --- creating and reading Jobs -------------------------------------------------------------------


def test_create_then_the_same_manifest_adopts_the_existing_job(
    kube: KubeClient, settings: Settings
) -> None:
    manifest = job_manifest(settings, run_for="30s")
    first, created = kube.create_job(manifest)
    again, created_again = kube.create_job(manifest)
    assert (created, created_again) == (True, False)
    assert again.uid == first.uid
    assert (
        again.annotations[REQUEST_ID_ANNOTATION]
        == manifest["metadata"]["annotations"][REQUEST_ID_ANNOTATION]
    )
    assert again.finalizers == (FINALIZER,)


def test_an_invalid_manifest_is_rejected_with_the_api_servers_message(
    kube: KubeClient, settings: Settings
) -> None:
    manifest = job_manifest(settings)
    manifest["spec"]["template"]["spec"]["containers"][0]["name"] = "Not_A_Dns_Label"
    with pytest.raises(KubeRejected) as caught:
        kube.create_job(manifest)
    assert caught.value.status == 422
    assert caught.value.reason == "Invalid"
    assert "spec.template.spec.containers[0].name: Invalid value" in str(caught.value)
    assert caught.value.__cause__ is not None  # the library's exception stays attached


def test_a_missing_job_reads_as_none(kube: KubeClient) -> None:
    assert kube.get_job("no-such-job") is None


def test_a_completed_job_reads_as_succeeded_with_its_times(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings))
    assert job.state is JobState.RUNNING
    wait_job(batch, namespace, job.name, "Complete")
    view = kube.get_job(job.name)
    assert view is not None
    assert view.state is JobState.SUCCEEDED
    assert view.started_at is not None
    assert view.finished_at is not None
    assert view.started_at <= view.finished_at
    (pod,) = kube.job_pods(job.name)
    assert (pod.job_name, pod.phase, pod.exit_code) == (job.name, "Succeeded", 0)
    assert pod.started_at is not None
    assert pod.finished_at is not None


def test_a_failed_job_reads_as_failed_and_its_pod_shows_the_exit_code(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings, exit_code=3))
    wait_job(batch, namespace, job.name, "Failed")
    view = kube.get_job(job.name)
    assert view is not None
    assert view.state is JobState.FAILED
    assert view.reason == "BackoffLimitExceeded"
    assert view.finished_at is not None  # a failed Job has no completionTime
    (pod,) = kube.job_pods(job.name)
    assert (pod.phase, pod.exit_code) == ("Failed", 3)


def test_a_job_past_its_deadline_reads_as_timed_out(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings, run_for="10m", deadline_s=2))
    wait_job(batch, namespace, job.name, "Failed")
    view = kube.get_job(job.name)
    assert view is not None
    assert (view.state, view.reason) == (JobState.TIMED_OUT, "DeadlineExceeded")
    assert view.finished_at is not None


def test_a_pod_that_cannot_start_shows_its_waiting_reason(
    kube: KubeClient, settings: Settings, core: k8s.CoreV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings, waiting_reason="ImagePullBackOff"))
    wait_pod(core, namespace, job.name, container_waiting("ImagePullBackOff"))
    (pod,) = kube.job_pods(job.name)
    assert (pod.phase, pod.waiting_reason, pod.exit_code) == ("Pending", "ImagePullBackOff", None)
    assert pod.stuck
    assert "ImagePullBackOff" in (pod.waiting_message or "")
    view = kube.get_job(job.name)
    assert view is not None
    assert view.state is JobState.RUNNING


def test_read_log_returns_the_pods_log(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings))
    wait_job(batch, namespace, job.name, "Complete")
    (pod,) = kube.job_pods(job.name)
    text = kube.read_log(pod.name)
    assert text is not None
    assert "SUCCESS" in text.splitlines()
    assert kube.read_log(pod.name, limit_bytes=10) == text.encode()[:10].decode()
    assert kube.read_log("no-such-pod") is None  # a pod that is gone: its log is lost
    assert kube.read_log("no-such-pod", container="main") is None


# --- deleting and releasing ----------------------------------------------------------------------


def test_delete_job_removes_its_pods_too(
    kube: KubeClient, settings: Settings, core: k8s.CoreV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings, run_for="10m", finalizer=False))
    wait_pod(core, namespace, job.name, lambda pod: pod.status.phase == "Running")
    kube.delete_job(job.name)
    # Without background propagation a deleted Job leaves its pods running, orphaned.
    wait_gone(core.list_namespaced_pod, namespace=namespace, label_selector=f"job-name={job.name}")
    assert kube.get_job(job.name) is None
    kube.delete_job(job.name)  # deleting again is fine


def test_release_lets_a_deleted_job_and_its_pods_go(
    kube: KubeClient,
    settings: Settings,
    batch: k8s.BatchV1Api,
    core: k8s.CoreV1Api,
    namespace: str,
) -> None:
    job, _ = kube.create_job(job_manifest(settings, run_for="10m"))
    wait_pod(core, namespace, job.name, lambda pod: pod.status.phase == "Running")
    kube.delete_job(job.name)
    held = kube.get_job(job.name)
    assert held is not None
    assert held.deleting
    assert FINALIZER in held.finalizers
    # The finalizer keeps the Job, and so its pods and log, until the reply is out.
    assert len(kube.job_pods(job.name)) == 1
    kube.release(job.name)
    wait_gone(
        batch.list_namespaced_job, namespace=namespace, field_selector=f"metadata.name={job.name}"
    )
    wait_gone(core.list_namespaced_pod, namespace=namespace, label_selector=f"job-name={job.name}")
    kube.release(job.name)  # releasing a Job that is gone is fine


def test_release_from_an_outdated_view_removes_only_the_workers_finalizer(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api
) -> None:
    manifest = job_manifest(settings, run_for="10m")
    manifest["metadata"]["finalizers"] = ["example.com/other", FINALIZER]
    job, _ = kube.create_job(manifest)
    # Someone else edits the list after our view was taken: our finalizer moves to index 0.
    batch.patch_namespaced_job(
        job.name,
        kube.namespace,
        [{"op": "replace", "path": "/metadata/finalizers", "value": [FINALIZER, "example.com/x"]}],
    )
    kube.release(job.name, known=job)  # the view says index 1: the patch's test fails, re-read
    after = kube.get_job(job.name)
    assert after is not None
    assert list(after.finalizers) == ["example.com/x"]
    batch.patch_namespaced_job(job.name, kube.namespace, {"metadata": {"finalizers": None}})


# --- claiming ------------------------------------------------------------------------------------


def race_claims(settings: Settings, seen: JobView, stale_after_s: float) -> dict[str, JobView]:
    """Two workers (two connections) claim the same view at the same moment: the winners."""
    workers = [KubeClient(settings) for _ in range(2)]
    start = threading.Barrier(2)
    results: dict[str, JobView | None] = {}

    def claim(index: int) -> None:
        start.wait()
        holder = f"worker-{index}"
        results[holder] = workers[index].claim(seen, holder, stale_after_s=stale_after_s)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2
    return {holder: view for holder, view in results.items() if view is not None}


@pytest.mark.parametrize("made_by", ["this worker", "an older worker"])
def test_exactly_one_of_two_workers_claims_a_finished_job(
    made_by: str, kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    manifest = job_manifest(settings)
    if made_by == "an older worker":  # no claim annotation: the resourceVersion decides
        del manifest["metadata"]["annotations"][CLAIMED_BY_ANNOTATION]
    job, _ = kube.create_job(manifest)
    wait_job(batch, namespace, job.name, "Complete")
    finished = kube.get_job(job.name)
    assert finished is not None
    results = race_claims(settings, finished, stale_after_s=60)
    winners = dict(results)
    assert len(winners) == 1
    ((holder, won),) = winners.items()
    assert won.annotations[CLAIMED_BY_ANNOTATION] == holder
    stored = kube.get_job(job.name)
    assert stored is not None
    assert stored.annotations[CLAIMED_BY_ANNOTATION] == holder
    # The loser, trying again with the fresh Job, still finds a live claim.
    loser = next(h for h in ("worker-0", "worker-1") if h != holder)
    assert kube.claim(stored, loser, stale_after_s=60) is None
    # The winner may renew its own claim.
    assert kube.claim(stored, holder, stale_after_s=60) is not None


def test_two_workers_taking_over_one_stale_claim_one_wins(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings))
    wait_job(batch, namespace, job.name, "Complete")
    long_ago = (datetime.now(UTC) - timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    dead_claim = {CLAIMED_BY_ANNOTATION: "dead-worker", CLAIMED_AT_ANNOTATION: long_ago}
    batch.patch_namespaced_job(job.name, namespace, {"metadata": {"annotations": dead_claim}})
    seen = kube.get_job(job.name)
    assert seen is not None
    winners = race_claims(settings, seen, stale_after_s=60)
    assert len(winners) == 1
    stored = kube.get_job(job.name)
    assert stored is not None
    assert stored.annotations[CLAIMED_BY_ANNOTATION] == next(iter(winners))


def test_a_stale_claim_is_taken_over(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings))
    wait_job(batch, namespace, job.name, "Complete")
    # A worker that claimed the Job two minutes ago and died since.
    long_ago = (datetime.now(UTC) - timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    dead_claim = {CLAIMED_BY_ANNOTATION: "dead-worker", CLAIMED_AT_ANNOTATION: long_ago}
    batch.patch_namespaced_job(job.name, namespace, {"metadata": {"annotations": dead_claim}})
    seen = kube.get_job(job.name)
    assert seen is not None
    assert kube.claim(seen, "newcomer", stale_after_s=600) is None  # not stale yet by this rule
    taken = kube.claim(seen, "newcomer", stale_after_s=60)
    assert taken is not None
    assert taken.annotations[CLAIMED_BY_ANNOTATION] == "newcomer"
    assert datetime.fromisoformat(taken.annotations[CLAIMED_AT_ANNOTATION]) > datetime.now(
        UTC
    ) - timedelta(minutes=1)


def test_claiming_with_an_outdated_view_rereads_and_still_wins_when_unclaimed(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    job, _ = kube.create_job(job_manifest(settings))
    outdated = kube.get_job(job.name)
    assert outdated is not None
    wait_job(batch, namespace, job.name, "Complete")  # the Job changed since `outdated`
    claimed = kube.claim(outdated, "me", stale_after_s=60)
    assert claimed is not None
    assert claimed.resource_version != outdated.resource_version


# --- errors --------------------------------------------------------------------------------------


def runner_on(settings: Settings, kube: KubeClient) -> tuple[Runner, queue.Queue[object]]:
    """A runner driven by hand (no watch started) and the queue of what it tells the service."""
    said: queue.Queue[object] = queue.Queue()
    runner = Runner(settings, index=0, count=1, send=said.put, kube=kube, storage=Storage(settings))
    return runner, said


class CountingKube(KubeClient):
    """The real client, counting the calls that finishing a Job makes."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls: Counter[str] = Counter()

    def get_job(self, name: str) -> JobView | None:
        self.calls["get_job"] += 1
        return super().get_job(name)

    def claim(self, job: JobView, holder: str, *, stale_after_s: float) -> JobView | None:
        self.calls["claim"] += 1
        return super().claim(job, holder, stale_after_s=stale_after_s)

    def job_pods(self, job_name: str) -> list[PodView]:
        self.calls["job_pods"] += 1
        return super().job_pods(job_name)


def test_a_job_let_go_is_not_finished_again_from_an_older_view_of_it(
    settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    kube = CountingKube(settings)
    runner, said = runner_on(settings, kube)
    job, _ = kube.create_job(job_manifest(settings))
    wait_job(batch, namespace, job.name, "Complete")
    ended = kube.get_job(job.name)
    assert ended is not None
    runner._on_job(ended)  # as the watch delivers it
    finished = said.get(timeout=60)
    assert isinstance(finished, JobFinished)
    assert finished.job_name == job.name
    runner._release(job.name)  # the service confirmed the reply
    calls = dict(kube.calls)

    # A watch that lags still shows the Job ended with its finalizer: nothing is owed.
    runner._on_job(ended)
    runner._finishing.shutdown(wait=True)
    assert dict(kube.calls) == calls
    assert said.empty()


class GatedCreates(KubeClient):
    """The real client, except that every create waits for the gate and then fails."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        self.waiting = threading.Semaphore(0)

    def create_job(self, manifest: Mapping[str, Any]) -> tuple[JobView, bool]:
        self.waiting.release()
        self.gate.wait(timeout=120)
        raise TransientError("the test's gate held this create")


def test_a_job_that_ends_during_a_burst_of_starts_is_finished_without_waiting_for_them(
    settings: Settings, batch: k8s.BatchV1Api, namespace: str
) -> None:
    kube = GatedCreates(settings)
    runner, said = runner_on(settings, kube)
    job, _ = KubeClient(settings).create_job(job_manifest(settings))
    wait_job(batch, namespace, job.name, "Complete")
    request = Request(image="example.invalid/mstc-test:1", job_name="burst", timeout_minutes=5,
                      input_bucket="in", output_bucket="out")  # fmt: skip
    burst = 40  # more than the starting threads, so that starts queue behind each other
    for key in range(burst):
        runner.handle(StartJob(key, request, str(uuid.uuid4()), ReplyRoute()))
    try:
        for _ in range(16):  # every starting thread is held in a create
            assert kube.waiting.acquire(timeout=60)
        ended = kube.get_job(job.name)
        assert ended is not None
        runner._on_job(ended)  # as the watch delivers it
        finished = next(m for m in iter(lambda: said.get(timeout=60), None)
                        if isinstance(m, JobFinished))  # fmt: skip
        assert finished.job_name == job.name
        assert not kube.gate.is_set()  # no start got through first
    finally:
        kube.gate.set()
        runner.stop()


def test_an_unreachable_api_server_is_unavailable_not_rejected(
    settings: Settings, stack: StackInfo
) -> None:
    api = k8s_config.new_client_from_config(config_file=str(stack.kubeconfig))
    api.configuration.host = f"https://127.0.0.1:{unused_port()}"
    with pytest.raises(KubeUnavailable) as caught:
        KubeClient(settings, api_client=api).get_job("anything")
    assert "cannot reach the Kubernetes API" in str(caught.value)


# --- the watcher ---------------------------------------------------------------------------------


def test_watcher_delivers_the_end_of_a_job_that_finished_before_it_started(
    kube: KubeClient,
    settings: Settings,
    batch: k8s.BatchV1Api,
    namespace: str,
    make_watcher: Callable[..., JobWatcher],
) -> None:
    job, _ = kube.create_job(job_manifest(settings))
    wait_job(batch, namespace, job.name, "Complete")
    recorder = Recorder()
    watcher = make_watcher(recorder)
    assert watcher.synced.wait(30)
    # Delivered by the initial list, before `synced` was set.
    assert recorder.job_in(job.name, JobState.SUCCEEDED) is not None
    assert any(p.job_name == job.name and p.exit_code == 0 for p in recorder.pods)


def test_watcher_delivers_an_ending_after_it_started_across_watch_timeouts(
    kube: KubeClient, settings: Settings, make_watcher: Callable[..., JobWatcher]
) -> None:
    # The pod callback fails every time: the watcher must log it and go on.
    recorder = Recorder(failing_pod_callback=True)
    watcher = make_watcher(recorder, watch_timeout_s=1)
    assert watcher.synced.wait(30)
    job, _ = kube.create_job(job_manifest(settings, run_for="3s"))
    recorder.wait_for(lambda: recorder.job_in(job.name, JobState.SUCCEEDED))
    recorder.wait_for(
        lambda: any(p.job_name == job.name and p.exit_code == 0 for p in recorder.pods)
    )
    # The 1 s watches ended normally several times and resumed from their resourceVersion:
    # no relist beyond the first two, and nothing counted as a reconnect.
    assert watcher.relists == 2
    assert watcher.reconnects == 0
    assert watcher.opened["jobs"] >= 3


def test_watcher_follows_many_jobs_with_one_watch_per_kind(
    kube: KubeClient, settings: Settings, make_watcher: Callable[..., JobWatcher]
) -> None:
    recorder = Recorder()
    watcher = make_watcher(recorder)
    assert watcher.synced.wait(30)
    names = [kube.create_job(job_manifest(settings))[0].name for _ in range(6)]
    recorder.wait_for(lambda: all(recorder.job_in(name, JobState.SUCCEEDED) for name in names))
    # The Java worker opened a watch per Job; here the cost does not grow with the Jobs.
    assert watcher.opened == {"jobs": 1, "pods": 1}
    assert {p.job_name for p in recorder.pods} >= set(names)


def test_a_watcher_kept_to_some_jobs_skips_the_others_events_undecoded(
    kube: KubeClient,
    settings: Settings,
    batch: k8s.BatchV1Api,
    namespace: str,
    make_watcher: Callable[..., JobWatcher],
) -> None:
    ours = [job_manifest(settings) for _ in range(2)]
    kept = {manifest["metadata"]["name"] for manifest in ours}
    recorder = Recorder()
    watcher = make_watcher(recorder, keep=kept.__contains__)
    assert watcher.synced.wait(30)
    # The others first: events come in order, so theirs are all read once ours have come.
    others = [kube.create_job(job_manifest(settings))[0].name for _ in range(3)]
    for name in others:
        wait_job(batch, namespace, name, "Complete")
    for manifest in ours:
        kube.create_job(manifest)
    recorder.wait_for(lambda: all(recorder.job_in(name, JobState.SUCCEEDED) for name in kept))
    recorder.wait_for(lambda: {p.job_name for p in recorder.pods if p.exit_code == 0} == kept)

    assert {j.name for j in recorder.jobs} == kept
    assert {p.job_name for p in recorder.pods} == kept
    # The others' Jobs and pods were recognised in the server's own JSON, not decoded.
    assert watcher.skipped["jobs"] >= len(others)
    assert watcher.skipped["pods"] >= len(others)
    # What a sweep reads instead of a list: this watcher's Jobs, as they are now.
    known = {job.name: job for job in watcher.known_jobs()}
    assert set(known) == kept
    assert all(job.state is JobState.SUCCEEDED for job in known.values())


def test_watcher_relists_after_an_expired_watch_and_keeps_delivering(
    kube: KubeClient, settings: Settings, make_watcher: Callable[..., JobWatcher]
) -> None:
    recorder = Recorder()
    watcher = make_watcher(recorder)
    assert watcher.synced.wait(30)
    first, _ = kube.create_job(job_manifest(settings))
    done = recorder.wait_for(lambda: recorder.job_in(first.name, JobState.SUCCEEDED))
    assert done is not None
    deliveries = len(recorder.jobs)

    watcher._expire()  # as if the API server had answered 410 Gone on both watches

    # Only a relist delivers the same version of a Job a second time.
    recorder.wait_for(
        lambda: any(j.resource_version == done.resource_version for j in recorder.jobs[deliveries:])
    )
    second, _ = kube.create_job(job_manifest(settings))
    recorder.wait_for(lambda: recorder.job_in(second.name, JobState.SUCCEEDED))
    assert watcher.reconnects >= 1
    assert watcher.relists >= 3


def test_watcher_survives_a_broken_connection_and_reports_what_happened_meanwhile(
    settings: Settings,
    stack: StackInfo,
    batch: k8s.BatchV1Api,
    namespace: str,
    kube: KubeClient,
    make_watcher: Callable[..., JobWatcher],
) -> None:
    api = k8s_config.new_client_from_config(config_file=str(stack.kubeconfig))
    server = urlsplit(api.configuration.host)
    proxy = TcpProxy((server.hostname or "127.0.0.1", server.port or 443))
    try:
        api.configuration.host = f"https://127.0.0.1:{proxy.port}"
        recorder = Recorder()
        watcher = make_watcher(recorder, client=KubeClient(settings, api_client=api))
        assert watcher.synced.wait(30)
        doomed, _ = kube.create_job(job_manifest(settings, run_for="10m", finalizer=False))
        recorder.wait_for(lambda: any(j.name == doomed.name for j in recorder.jobs))

        proxy.block()  # the network between the watcher and the API server is gone
        ended, _ = kube.create_job(job_manifest(settings))
        wait_job(batch, namespace, ended.name, "Complete")
        kube.delete_job(doomed.name)
        wait_gone(
            batch.list_namespaced_job,
            namespace=namespace,
            field_selector=f"metadata.name={doomed.name}",
        )
        proxy.unblock()

        recorder.wait_for(lambda: recorder.job_in(ended.name, JobState.SUCCEEDED))
        recorder.wait_for(lambda: any(j.name == doomed.name for j in recorder.gone))
        assert watcher.reconnects >= 1
    finally:
        proxy.close()


def test_watcher_stops_promptly(kube: KubeClient) -> None:
    recorder = Recorder()
    watcher = JobWatcher(kube, recorder.on_job, recorder.on_pod, recorder.on_job_gone)
    watcher.start()
    assert watcher.synced.wait(30)
    watcher.stop()  # both threads are blocked reading their watch when this is called
    assert not any(thread.is_alive() for thread in watcher._threads)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
