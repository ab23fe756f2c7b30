"""Load and replicas: a burst of 1,000 requests, and two replicas on one queue with one killed.

What is checked is bookkeeping, not speed (speed is `make bench`'s): every request gets its
reply, no request gets a second Job, and no Job is left behind once the replies are out.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
from kubernetes import client as k8s

from tests.faults.report import FaultRecord
from tests.support.jobs_made import JobsMade
from tests.support.kube import wait_gone
from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request

pytestmark = pytest.mark.stack

BURST = 1000


def test_burst_of_a_thousand_requests_all_replied_once(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, jobs_made: JobsMade, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = f"{BURST} requests published at once (KWOK Jobs of about 1 s)"
    fault.expected = "all replied, each exactly once; one Job made each; no Job left behind"
    worker = make_worker(MSTC_JOB_TTL_SECONDS="0")
    start = time.monotonic()
    cids = [client.send(request(bucket), queue=work_queue) for _ in range(BURST)]
    replies = [client.wait(cid, timeout=900) for cid in cids]
    took = time.monotonic() - start
    client.barrier()
    counts = Counter(len(client.replies[cid]) for cid in cids)
    statuses = Counter(r["status"] for r in replies)
    assert counts == {1: BURST}
    assert statuses == {"succeeded": BURST}
    distinct = len({r["jobName"] for r in replies})
    assert distinct == BURST
    # The watch has every event of a thousand Jobs to deliver before its marker: a slow count.
    made = jobs_made.count(timeout=300)
    assert made == BURST
    wait_gone(k8s.BatchV1Api(api_client).list_namespaced_job, namespace=namespace, timeout=300)
    left = len(k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items)
    peak = worker.metric("mstc_jobs_in_flight")
    fault.saw(
        f"{len(replies)} replies in {took:.0f} s, replies per request {dict(counts)}, "
        f"statuses {dict(statuses)}; {distinct} distinct Job names replied; Jobs made: {made}; "
        f"Jobs left: {left}; in flight at the end {peak:.0f}"
    )


def test_two_replicas_share_a_queue_and_one_killed_mid_burst_loses_nothing(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, jobs_made: JobsMade, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "two replicas on one queue; one killed (-9) in the middle of a burst of 60"
    fault.expected = (
        "with both up: every request replied exactly once, by one replica; after the kill: "
        "every request replied at least once (a second reply only with the same Job), "
        "exactly one Job made each"
    )
    first, second = make_worker(), make_worker()
    fate = pod_fate(run_for="2s")

    # Both up: each request is handled once, whichever replica took it.
    calm = [client.send(request(bucket, **fate), queue=work_queue) for _ in range(20)]
    calm_replies = [client.wait(cid, timeout=180) for cid in calm]
    client.barrier()
    calm_counts = Counter(len(client.replies[cid]) for cid in calm)
    assert calm_counts == {1: 20}
    assert len({r["jobName"] for r in calm_replies}) == 20
    handled = [w.metric('mstc_requests_total{outcome="succeeded"}') for w in (first, second)]
    assert sum(handled) == 20
    assert min(handled) > 0, f"one replica took every request: {handled}"

    # One killed mid-burst: the other (and the cluster) finish what it held.
    burst = [client.send(request(bucket, **fate), queue=work_queue) for _ in range(60)]
    for cid in burst[:15]:
        client.wait(cid, timeout=180)
    first.signal(signal.SIGKILL)
    first.wait()
    replies = {cid: client.wait(cid, timeout=300) for cid in burst}
    client.barrier()
    counts = Counter(len(client.replies[cid]) for cid in burst)
    assert all(len(client.replies[cid]) >= 1 for cid in burst)
    for cid in burst:
        # A duplicate can only come from the reply-confirmed-but-not-released window.
        assert {r["jobName"] for r in client.replies[cid]} == {replies[cid]["jobName"]}
    assert {r["status"] for r in replies.values()} == {"succeeded"}
    assert len({r["jobName"] for r in replies.values()}) == 60
    made = jobs_made.count(timeout=120)
    assert made == 20 + 60
    wait_gone(k8s.BatchV1Api(api_client).list_namespaced_job, namespace=namespace, timeout=300)
    after = client.wait(client.send(request(bucket), queue=work_queue))["status"]
    assert after == "succeeded"
    replied = sum(1 for cid in burst if client.replies[cid])
    fault.saw(
        f"both up: {len(calm)} requests, replies per request {dict(calm_counts)}, split "
        f"{handled[0]:.0f}/{handled[1]:.0f}; after the kill: {replied} of {len(burst)} replied "
        f"({counts[1]} once, {sum(v for k, v in counts.items() if k > 1)} more than once, "
        f"each with one Job); Jobs made for the {len(calm) + len(burst)} requests: {made}; "
        f"none left; the survivor's next request {after}"
    )
