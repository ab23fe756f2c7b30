"""Kubernetes API faults: a restarted API server, expired watches, throttling and 5xx answers.

Each test injects one fault between a real worker and the real API server and then checks
the suite's four promises: every request gets exactly one final reply, no Job is created
twice for a request, no Job is left behind (the worker lets go of its finalizer and the
TTL deletes the Job), and the worker still serves a fresh request afterwards.

Faults other than the restart go through `KubeFaultProxy` (tests/faults/kube_proxy.py), a
TLS proxy in front of the stack's API server whose rules answer chosen requests with a
chosen status; its record of exchanges shows that the fault really happened. Tests about
watches raise MSTC_RESYNC_SECONDS far above their length, so that only the watch (not the
periodic sweep) can tell the worker that a Job ended.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from minio import Minio

import localstack
from mstc_worker.kube_errors import ATTEMPTS
from tests.faults.kube_proxy import KubeFaultProxy, Rule, issue_server_cert
from tests.faults.report import FaultRecord
from tests.support.jobs_made import JobsMade
from tests.support.kube import wait_gone
from tests.support.s3 import read_object
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request

JOBS = r"/apis/batch/v1/namespaces/[^/]+/jobs"
JOB = JOBS + r"/[^/?]+(\?|$)"
LIST_JOBS = JOBS + r"\?(?!.*watch=)"
LIST_PODS = r"/api/v1/namespaces/[^/]+/pods\?(?!.*watch=)"
WATCH = r"[?&]watch=true"
LOG = r"/pods/[^/]+/log\?"
# Only a watch can report an ending in these tests; the sweep would come too late.
NO_SWEEP = {"MSTC_RESYNC_SECONDS": "600"}
# The TTL controller deletes a finished Job's pods (its log) even while the worker's
# finalizer holds the Job: tests that delay the log read keep them longer than the delay.
POD_KEPT_S = 8
ONE_REPLY_SETTLE_S = 2.0  # how long a test keeps listening for a second reply that must not come

ProxiedWorker = Callable[..., WorkerProcess]


# --- fixtures and checks --------------------------------------------------------------------


@pytest.fixture
def kube_proxy(stack: StackInfo, tmp_path: Path) -> Iterator[KubeFaultProxy]:
    if stack.kind != "local" or stack.state_dir is None:
        pytest.skip("the fault proxy's certificate is signed with the local stack's CA key")
    pki = stack.state_dir / "pki"
    kubeconfig = json.loads(stack.kubeconfig.read_text())
    with KubeFaultProxy(
        kubeconfig["clusters"][0]["cluster"]["server"],
        ca=pki / "ca.crt",
        client_cert=(pki / "admin.crt", pki / "admin.key"),
        server_cert=issue_server_cert(pki, tmp_path / "proxy-pki"),
    ) as proxy:
        yield proxy


@pytest.fixture
def proxied_worker(
    make_worker: MakeWorker, kube_proxy: KubeFaultProxy, stack: StackInfo, tmp_path: Path
) -> ProxiedWorker:
    """A worker whose only way to the API server is the fault proxy."""
    kubeconfig = kube_proxy.write_kubeconfig(tmp_path / "kubeconfig-proxy", stack.kubeconfig)

    def make(*, ttl_s: int = 3, **env: str) -> WorkerProcess:
        return make_worker(KUBECONFIG=str(kubeconfig), MSTC_JOB_TTL_SECONDS=str(ttl_s), **env)

    return make


def send(client: AmqpClient, queue: str, bucket: str, name: str, run_for: str) -> str:
    return client.send(request(bucket, jobName=name, **pod_fate(run_for=run_for)), queue=queue)


def one_reply_each(
    client: AmqpClient, cids: list[str], timeout: float = 90
) -> list[dict[str, Any]]:
    """Each request's reply, after checking that no second one follows."""
    replies = [client.wait(cid, timeout=timeout) for cid in cids]
    client.settle(ONE_REPLY_SETTLE_S)
    counts = [len(client.replies[cid]) for cid in cids]
    assert counts == [1] * len(cids), f"replies per request: {counts}"
    return replies


def replied(client: AmqpClient, cids: list[str], replies: list[dict[str, Any]]) -> str:
    """The replies as measured: how many, their statuses, how many came per request."""
    statuses = sorted({r["status"] for r in replies})
    per_request = sorted({len(client.replies[cid]) for cid in cids})
    return f"{len(replies)}/{len(cids)} replied {'/'.join(statuses)}, per request {per_request}"


def nothing_left(api_client: k8s.ApiClient, namespace: str) -> float:
    """Wait until every Job of the namespace is deleted; the seconds it took."""
    started = time.monotonic()
    wait_gone(k8s.BatchV1Api(api_client).list_namespaced_job, namespace=namespace, timeout=60)
    return time.monotonic() - started


def still_serves(client: AmqpClient, queue: str, bucket: str) -> None:
    cid = send(client, queue, bucket, "after-fault", "1s")
    assert client.wait(cid, timeout=60)["status"] == "succeeded"


def jobs_created(proxy: KubeFaultProxy) -> int:
    """Creates the API server itself accepted (201), whatever the worker was told."""
    return sum(e.upstream_status == 201 for e in proxy.exchanges("POST", JOBS + "$"))


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)  # polling a condition with a deadline


# --- the API server restarted ---------------------------------------------------------------


def test_api_server_restarted_while_jobs_run(
    fault: FaultRecord, stack: StackInfo, make_worker: MakeWorker, client: AmqpClient,
    work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str, minio: Minio,
    jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = (
        "kube-apiserver restarted (SIGTERM, SIGKILL after 5 s, started again) while 3 Jobs run"
    )
    fault.expected = (
        "watches reconnect and relist; each request replied exactly once; exactly one Job made "
        "each; no Job left"
    )
    if stack.kind != "local":
        pytest.skip("restarts the local stack's kube-apiserver; this cluster's is not ours")
    cfg = localstack.Config.from_env()
    # The watch may be in a backoff of a few seconds when the server is back: keep pods longer.
    worker = make_worker(MSTC_JOB_TTL_SECONDS="12", **NO_SWEEP)
    cids = [send(client, work_queue, bucket, f"restart-{i}", f"{2 + 2 * i}s") for i in range(3)]
    batch = k8s.BatchV1Api(api_client)
    # Running, not only created: a Job is made suspended and resumed once its credentials are
    # in place, and the row is about Jobs that run.
    wait_until(
        lambda: sum(not j.spec.suspend for j in batch.list_namespaced_job(namespace).items) == 3,
        "3 Jobs created and resumed",
    )

    started = time.monotonic()
    try:
        # Open watches hold a terminating API server up; after 5 s it is killed (a crash).
        localstack.stop(cfg, "kube-apiserver", grace=5)
        stopped = time.monotonic() - started
        localstack.up_apiserver(cfg)
    finally:
        if not localstack.is_running(cfg, "kube-apiserver"):
            localstack.up_apiserver(cfg)  # never leave the stack without its API server
    down_s = time.monotonic() - started

    replies = one_reply_each(client, cids)
    assert [r["status"] for r in replies] == ["succeeded"] * 3, replies
    for reply in replies:
        assert "SUCCESS" in read_object(minio, reply["logBucket"], reply["logObject"]).decode()
    # The test's own watch lost its place in the restart too: its count re-lists, which could
    # miss only a Job made and deleted while it was away (none is: the worker holds each).
    made = jobs_made.names(across_relists=True)
    assert sorted(made) == sorted(r["jobName"] for r in replies), made
    broken = worker.log_text.count("watch failed")
    assert broken >= 1, "the worker never noticed the restart"
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    assert localstack.all_running(cfg), localstack.status(cfg)
    fault.saw(
        f"API server down {down_s:.1f} s (stop {stopped:.1f} s); {replied(client, cids, replies)}, "
        f"logs stored; {broken} watch failures logged; Jobs made: {len(made)} (the count's "
        f"watch re-listed {jobs_made.relists} time(s)); all Jobs gone {gone_s:.1f} s after the "
        "last reply; next request succeeded"
    )


# --- watches expire -------------------------------------------------------------------------


def test_watch_expired_by_an_error_event_relists_and_finishes_every_job(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str,
    jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = "a 410 Gone ERROR event written into every open Job and Pod watch mid-run"
    fault.expected = (
        "the worker relists, watches again, finishes every Job; exactly one reply and one Job "
        "made each"
    )
    proxied_worker(**NO_SWEEP)
    kube_proxy.wait_watches(4, WATCH)  # 2 processes x (jobs, pods)
    cids = [send(client, work_queue, bucket, f"expire-{i}", "3s") for i in range(3)]
    wait_until(lambda: jobs_created(kube_proxy) == 3, "3 Jobs created")

    at = time.monotonic()
    assert kube_proxy.expire_watches(WATCH) == 4
    wait_until(lambda: kube_proxy.expired_events == 4, "4 ERROR events written")

    replies = one_reply_each(client, cids)
    assert [r["status"] for r in replies] == ["succeeded"] * 3, replies
    relists = len(kube_proxy.exchanges("GET", LIST_JOBS, since=at))
    relists += len(kube_proxy.exchanges("GET", LIST_PODS, since=at))
    assert relists >= 4, f"{relists} lists after the expiry"
    made = jobs_made.count()
    assert made == 3
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"{kube_proxy.expired_events} ERROR 410 events injected; {relists} relists followed; "
        f"{replied(client, cids, replies)}; Jobs made: {made}; Jobs gone {gone_s:.1f} s after; "
        "next request succeeded"
    )


def test_watch_reopened_into_410_gone_relists_and_finishes_every_job(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str,
    jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = "open watches cut, and their re-opening answered HTTP 410 Gone (4 times)"
    fault.expected = (
        "the worker relists on 410 and watches again; exactly one reply and one Job made each"
    )
    proxied_worker(**NO_SWEEP)
    kube_proxy.wait_watches(4, WATCH)
    cids = [send(client, work_queue, bucket, f"gone-{i}", "3s") for i in range(3)]
    wait_until(lambda: jobs_created(kube_proxy) == 3, "3 Jobs created")

    gone = kube_proxy.add(Rule("GET", WATCH, 410, times=4))
    at = time.monotonic()
    assert kube_proxy.cut_watches(WATCH) == 4

    replies = one_reply_each(client, cids)
    assert [r["status"] for r in replies] == ["succeeded"] * 3, replies
    assert gone.hits == 4
    relists = len(kube_proxy.exchanges("GET", LIST_JOBS + "|" + LIST_PODS, since=at))
    assert relists >= 8, f"{relists} lists: one after the cut and one after the 410, per watch"
    kube_proxy.wait_watches(4, WATCH)
    made = jobs_made.count()
    assert made == 3
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"{kube_proxy.watches_cut} watches cut, {gone.hits} re-opens answered 410, "
        f"{relists} relists; {replied(client, cids, replies)}; Jobs made: {made}; "
        f"Jobs gone {gone_s:.1f} s after; next request succeeded"
    )


def test_watch_reopened_into_server_errors_backs_off_and_recovers(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str,
    jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = "open watches cut, and the next 8 watch requests answered 500/503"
    fault.expected = "the watch backs off and comes back; exactly one reply and one Job made each"
    proxied_worker(**NO_SWEEP)
    kube_proxy.wait_watches(4, WATCH)
    cids = [send(client, work_queue, bucket, f"wfail-{i}", "2s") for i in range(2)]
    wait_until(lambda: jobs_created(kube_proxy) == 2, "2 Jobs created")

    errors = [kube_proxy.add(Rule("GET", WATCH, status, times=4)) for status in (500, 503)]
    at = time.monotonic()
    assert kube_proxy.cut_watches(WATCH) == 4

    replies = one_reply_each(client, cids)
    assert [r["status"] for r in replies] == ["succeeded"] * 2, replies
    assert [rule.hits for rule in errors] == [4, 4]
    kube_proxy.wait_watches(4, WATCH)
    back_s = max(e.at for e in kube_proxy.exchanges("GET", WATCH, since=at)) - at
    made = jobs_made.count()
    assert made == 2
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"{kube_proxy.watches_cut} watches cut; {sum(rule.hits for rule in errors)} re-opens "
        f"answered 500/503; all 4 watches back after {back_s:.1f} s; "
        f"{replied(client, cids, replies)}; Jobs made: {made}; Jobs gone {gone_s:.1f} s after; "
        "next request succeeded"
    )


def test_throttled_watch_reopens_no_sooner_than_retry_after(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str,
    jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = "open watches cut, and their re-opening answered 429, Retry-After: 3 (once each)"
    fault.expected = (
        "each watch waits the 3 s it was told, then comes back; exactly one reply, one Job made"
    )
    proxied_worker(MSTC_PROCESSES="1", **NO_SWEEP)  # one watch per kind: a clean sequence each
    kube_proxy.wait_watches(2, WATCH)
    cid = send(client, work_queue, bucket, "wthrottle", "3s")
    wait_until(lambda: jobs_created(kube_proxy) == 1, "the Job created")

    throttle = kube_proxy.add(Rule("GET", WATCH, 429, times=2, retry_after=3))
    at = time.monotonic()
    assert kube_proxy.cut_watches(WATCH) == 2
    kube_proxy.wait_watches(2, WATCH)

    (reply,) = one_reply_each(client, [cid])
    assert reply["status"] == "succeeded", reply
    assert throttle.hits == 2
    waits = {}
    for kind in ("jobs", "pods"):
        opens = kube_proxy.exchanges("GET", rf"/{kind}\?.*{WATCH}", since=at)
        assert [e.status for e in opens[:2]] == [429, 200], opens
        waits[kind] = opens[1].at - opens[0].at
    assert min(waits.values()) >= 2.95, f"Retry-After 3 s, re-opened after {waits}"
    made = jobs_made.count()
    assert made == 1
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"{kube_proxy.watches_cut} watches cut, {throttle.hits} re-opens answered 429 "
        "(Retry-After 3); next re-open after "
        + ", ".join(f"{k} {w:.2f} s" for k, w in waits.items())
        + f"; {replied(client, [cid], [reply])}; Jobs made: {made}; Job gone {gone_s:.1f} s "
        "after; next request succeeded"
    )


# --- throttling and server errors on single calls -------------------------------------------


def test_throttled_create_waits_as_told_by_retry_after(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str,
    jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = "Job create answered 429 Too Many Requests, Retry-After: 2, twice"
    fault.expected = "the worker waits 2 s before each retry; exactly one Job made, one reply"
    proxied_worker()
    throttle = kube_proxy.add(Rule("POST", JOBS + "$", 429, times=2, retry_after=2))
    cid = send(client, work_queue, bucket, "throttled", "1s")

    (reply,) = one_reply_each(client, [cid])
    assert reply["status"] == "succeeded", reply
    creates = kube_proxy.exchanges("POST", JOBS + "$")
    assert [e.status for e in creates] == [429, 429, 201]
    gaps = [b.at - a.at for a, b in itertools.pairwise(creates)]
    assert min(gaps) >= 1.95, gaps  # our own backoff would be 0.2-0.6 s
    assert throttle.hits == 2
    made = jobs_made.count()
    assert made == 1
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"creates answered {[e.status for e in creates]}; waits between them "
        f"{', '.join(f'{g:.2f} s' for g in gaps)}; {replied(client, [cid], [reply])}; "
        f"Jobs made: {made}; Job gone {gone_s:.1f} s after; next request succeeded"
    )


def test_create_whose_answer_was_lost_adopts_the_job_it_made(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str,
    jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = "Job create reached the API server (201) but the worker was answered 503"
    fault.expected = "the retry meets 409 and adopts that Job: exactly one Job made, one reply"
    proxied_worker()
    lost = kube_proxy.add(Rule("POST", JOBS + "$", 503, forward=True))
    cid = send(client, work_queue, bucket, "lost-answer", "1s")

    (reply,) = one_reply_each(client, [cid])
    assert reply["status"] == "succeeded", reply
    creates = kube_proxy.exchanges("POST", JOBS + "$")
    seen = [(e.upstream_status, e.status) for e in creates]
    assert seen == [(201, 503), (409, 409)], seen
    assert lost.hits == 1
    made = jobs_made.count()
    assert made == 1
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"creates (server, worker saw): {seen}; Job adopted; {replied(client, [cid], [reply])}; "
        f"Jobs made: {made}; Job gone {gone_s:.1f} s after; next request succeeded"
    )


# (name, method, path, body, status, Retry-After): each call the worker makes to finish a Job.
# It reads no Job on that way any more: the watch's view is claimed, and the claim's answer
# is what the release starts from.
FINISHING_CALLS = [
    ("claim patch", "PATCH", JOB, "claimed-by", 503, None),
    ("release patch", "PATCH", JOB, "finalizers", 500, None),
    ("log read", "GET", LOG, None, 429, 1),
]


@pytest.mark.parametrize(
    ("call", "method", "path", "body", "status", "retry_after"),
    FINISHING_CALLS,
    ids=[c[0].replace(" ", "-") for c in FINISHING_CALLS],
)
def test_finishing_call_failing_twice_is_retried(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient,
    namespace: str, minio: Minio, jobs_made: JobsMade,
    call: str, method: str, path: str, body: str | None, status: int, retry_after: int | None,
) -> None:  # fmt: skip
    hint = f", Retry-After: {retry_after}" if retry_after else ""
    fault.fault = f"{call} ({method}) answered {status}{hint}, twice"
    fault.expected = (
        "retried; the reply is correct (log stored), sent exactly once; one Job made; the Job "
        "let go"
    )
    proxied_worker(ttl_s=POD_KEPT_S if path == LOG else 3)
    rule = kube_proxy.add(Rule(method, path, status, times=2, retry_after=retry_after, body=body))
    cid = send(client, work_queue, bucket, "finishing", "1s")

    (reply,) = one_reply_each(client, [cid])
    assert reply["status"] == "succeeded", reply
    assert reply.get("error") is None, reply
    assert "SUCCESS" in read_object(minio, reply["logBucket"], reply["logObject"]).decode()
    assert rule.hits == 2, f"the fault never happened: {rule.hits} hits"
    calls = kube_proxy.exchanges(method, path, body=body)[:3]
    assert [e.status for e in calls] == [status, status, 200], calls
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    if retry_after is not None:
        assert min(gaps) >= retry_after - 0.05, f"Retry-After {retry_after} s, waited {gaps}"
    made = jobs_made.count()
    assert made == 1
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"{call} answered {[e.status for e in calls]}, retried after "
        f"{', '.join(f'{g:.2f} s' for g in gaps)}; {replied(client, [cid], [reply])} (log "
        f"stored and readable); Jobs made: {made}; Job gone {gone_s:.1f} s after; "
        "next request succeeded"
    )


def test_create_failing_for_good_ends_in_an_error_reply(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str,
    jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = "every Job create answered 503 Service Unavailable, until cleared"
    fault.expected = (
        "bounded retries, then exactly one `error` reply naming the cause; no Job made; worker "
        "serves on"
    )
    worker = proxied_worker()
    outage = kube_proxy.add(Rule("POST", JOBS + "$", 503, times=None))
    started = time.monotonic()
    cid = send(client, work_queue, bucket, "never", "1s")

    (reply,) = one_reply_each(client, [cid])
    took_s = time.monotonic() - started
    assert reply["status"] == "error", reply
    assert "HTTP 503" in reply["error"], reply
    assert "unavailable" in reply["error"], reply
    attempts = len(kube_proxy.exchanges("POST", JOBS + "$"))
    assert attempts == outage.hits
    assert attempts <= 10, f"{attempts} create attempts"  # 5 per delivery, redelivered once
    made = jobs_made.count()
    assert made == 0
    ready, _ = worker.get("/readyz")
    assert ready == 200
    kube_proxy.clear()
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"{attempts} create attempts in {took_s:.1f} s, then {replied(client, [cid], [reply])}: "
        f"'{reply['error'][:120]}...'; Jobs made: {made}; /readyz {ready}; after clearing, the "
        "next request succeeded"
    )


def test_log_read_failing_for_good_still_replies_and_says_why(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient,
    namespace: str, minio: Minio, jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = "every pod log read answered 429 Too Many Requests, Retry-After: 1, until cleared"
    fault.expected = (
        f"{ATTEMPTS} reads, no hidden extra ones, then exactly one reply with the Job's real "
        "status and a log file saying why the log is missing; one Job made"
    )
    proxied_worker(ttl_s=POD_KEPT_S)
    throttle = kube_proxy.add(Rule("GET", LOG, 429, times=None, retry_after=1))
    cid = send(client, work_queue, bucket, "no-log", "1s")

    (reply,) = one_reply_each(client, [cid])
    assert reply["status"] == "succeeded", reply
    reads = kube_proxy.exchanges("GET", LOG)
    assert len(reads) == throttle.hits == ATTEMPTS, [e.status for e in reads]
    text = read_object(minio, reply["logBucket"], reply["logObject"]).decode()
    assert "could not be read" in text, text
    assert "HTTP 429" in text, text
    kube_proxy.clear()
    made = jobs_made.count()
    assert made == 1
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"{len(reads)} log reads, answered {sorted({e.status for e in reads})}, over "
        f"{reads[-1].at - reads[0].at:.1f} s; {replied(client, [cid], [reply])}; log object "
        f"says: {text.strip()[:80]!r}...; Jobs made: {made}; Job gone {gone_s:.1f} s after; "
        "next request succeeded"
    )


def test_log_read_delayed_past_the_jobs_ttl_says_the_log_is_lost(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient,
    namespace: str, minio: Minio, jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = (
        "log read throttled (429, Retry-After: 3, twice) past the Job's 1 s TTL, which "
        "deletes the pod while the finalizer still holds the Job"
    )
    fault.expected = (
        "exactly one reply with the real status; the log file says the log is lost, and why; "
        "one Job made"
    )
    proxied_worker(ttl_s=1)
    throttle = kube_proxy.add(Rule("GET", LOG, 429, times=2, retry_after=3))
    cid = send(client, work_queue, bucket, "ttl-lost", "1s")

    (reply,) = one_reply_each(client, [cid])
    assert reply["status"] == "succeeded", reply
    assert reply["exitCode"] == 0, reply
    reads = kube_proxy.exchanges("GET", LOG)
    assert [e.status for e in reads] == [429, 429, 404], reads  # the pod was gone by then
    assert throttle.hits == 2
    text = read_object(minio, reply["logBucket"], reply["logObject"]).decode()
    assert "is lost" in text, text  # not an empty file that reads as "printed nothing"
    assert "deleted" in text, text
    made = jobs_made.count()
    assert made == 1
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"log reads answered {[e.status for e in reads]}; {replied(client, [cid], [reply])} "
        f"(exit code {reply['exitCode']}); Jobs made: {made}; "
        f"log object says: {text.strip()[:70]!r}...; Job gone {gone_s:.1f} s after; "
        "next request succeeded"
    )
