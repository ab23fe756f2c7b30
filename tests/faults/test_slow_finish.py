"""A finish slower than the claim's stale time: the claim is renewed, and the client gets one reply.

Two replicas watch the same Jobs through the fault proxy (tests/faults/kube_proxy.py), which
holds every pod log read for three times the claim's stale time. The replica that claimed the
Job is still reading its log when an unrenewed claim would look abandoned; the other replica's
sweep would then take the Job over, read the log again and reply a second time. The proxy's
record shows how many log reads were made (one finish each) and that the claim was renewed.
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from minio import Minio

from tests.faults.kube_proxy import KubeFaultProxy, Rule
from tests.faults.report import FaultRecord
from tests.faults.test_kube_faults import (  # noqa: F401  (fixtures, found by pytest by name)
    JOB,
    LOG,
    ProxiedWorker,
    kube_proxy,
    nothing_left,
    one_reply_each,
    proxied_worker,
    send,
    still_serves,
)
from tests.support.s3 import read_object
from tests.support.worker import AmqpClient

pytestmark = pytest.mark.stack

STALE_S = 5  # the smallest MSTC_CLAIM_STALE_SECONDS allowed
LOG_DELAY_S = 3 * STALE_S
# The Job's pod must outlive the delayed read, or the log is lost (a different fault).
TTL_S = LOG_DELAY_S + 8


def test_a_claim_held_through_a_slow_log_read_gives_one_reply(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,  # noqa: F811
    client: AmqpClient, work_queue: str, bucket: str, api_client: k8s.ApiClient,
    namespace: str, minio: Minio,
) -> None:  # fmt: skip
    fault.fault = (
        f"stale claim under a slow log: every pod log read held {LOG_DELAY_S} s by the proxy "
        f"(claims go stale after {STALE_S} s), two replicas"
    )
    fault.expected = "the holder renews its claim; one finish, one reply; the Job let go"
    settings = {"MSTC_CLAIM_STALE_SECONDS": str(STALE_S), "MSTC_RESYNC_SECONDS": "1"}
    replicas = [proxied_worker(ttl_s=TTL_S, **settings) for _ in range(2)]
    slow = kube_proxy.add(Rule("GET", LOG, None, times=None, delay=LOG_DELAY_S))
    cid = send(client, work_queue, bucket, "slow-log", "1s")

    reply = client.wait(cid, timeout=90)
    # A second finish starts (and reads the log) while the first one still waits on its read.
    assert slow.hits == 1, f"{slow.hits} log reads: the Job was finished {slow.hits} times"
    (reply,) = one_reply_each(client, [cid])
    assert reply["status"] == "succeeded", reply
    assert reply.get("error") is None, reply
    assert "SUCCESS" in read_object(minio, reply["logBucket"], reply["logObject"]).decode()
    stamps = kube_proxy.exchanges("PATCH", JOB, body="claimed-at")
    assert len(stamps) >= 3, f"{len(stamps)} claim writes: the claim was not renewed"
    logs = "".join(replica.log_text for replica in replicas)
    assert "claim lost" not in logs
    kube_proxy.clear()
    gone_s = nothing_left(api_client, namespace)
    still_serves(client, work_queue, bucket)
    fault.saw(
        f"{slow.hits} log read (held {LOG_DELAY_S} s); {len(stamps)} claim writes (the claim "
        f"and its renewals); 1 reply (succeeded, log stored); Job gone {gone_s:.1f} s after; "
        "next request succeeded"
    )
