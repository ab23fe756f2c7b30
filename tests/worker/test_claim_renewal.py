"""Renewing a claim (`KubeClient.renew_claim`) against the real API server.

The holder's renewal moves the claim's time to now; anyone else's renewal, a claim taken
over meanwhile and a Job that is gone all answer False and write nothing. Claiming a Job
one holds already renews it too (the retry of a failed finish).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client as k8s

from mstc_worker.kube import CLAIMED_AT_ANNOTATION, CLAIMED_BY_ANNOTATION, KubeClient
from mstc_worker.settings import Settings
from tests.support.kube import wait_gone, wait_job
from tests.worker.test_kube import (  # noqa: F401  (fixtures, found by pytest by name)
    _kubeconfig,
    batch,
    job_manifest,
    kube,
    settings,
)

pytestmark = pytest.mark.stack


def claimed_at(client: KubeClient, name: str) -> datetime:
    job = client.get_job(name)
    assert job is not None
    return datetime.fromisoformat(job.annotations[CLAIMED_AT_ANNOTATION])


def held_since(jobs: k8s.BatchV1Api, namespace: str, name: str, holder: str, ago: float) -> None:
    """Make `holder`'s claim on the Job `ago` seconds old."""
    at = (datetime.now(UTC) - timedelta(seconds=ago)).isoformat().replace("+00:00", "Z")
    claim = {CLAIMED_BY_ANNOTATION: holder, CLAIMED_AT_ANNOTATION: at}
    jobs.patch_namespaced_job(name, namespace, {"metadata": {"annotations": claim}})


def test_only_the_holder_renews_its_claim_and_a_lost_claim_says_so(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str,  # noqa: F811
) -> None:  # fmt: skip
    job, _ = kube.create_job(job_manifest(settings))
    wait_job(batch, namespace, job.name, "Complete")
    held_since(batch, namespace, job.name, "me", ago=50)
    before = datetime.now(UTC) - timedelta(seconds=5)

    assert kube.renew_claim(job.name, "me")
    assert claimed_at(kube, job.name) > before

    held_since(batch, namespace, job.name, "me", ago=50)
    assert not kube.renew_claim(job.name, "someone-else")
    assert claimed_at(kube, job.name) < before  # nothing written

    # Taken over (it went stale): the old holder's renewal fails and leaves the new claim.
    held_since(batch, namespace, job.name, "me", ago=120)
    seen = kube.get_job(job.name)
    assert seen is not None
    taken = kube.claim(seen, "newcomer", stale_after_s=60)
    assert taken is not None
    assert not kube.renew_claim(job.name, "me")
    after = kube.get_job(job.name)
    assert after is not None
    assert after.annotations[CLAIMED_BY_ANNOTATION] == "newcomer"

    # Gone: nothing to renew.
    kube.release(job.name)
    kube.delete_job(job.name)
    wait_gone(batch.list_namespaced_job, namespace=namespace)
    assert not kube.renew_claim(job.name, "newcomer")


def test_claiming_again_a_job_one_holds_renews_the_claim(
    kube: KubeClient, settings: Settings, batch: k8s.BatchV1Api, namespace: str,  # noqa: F811
) -> None:  # fmt: skip
    job, _ = kube.create_job(job_manifest(settings))
    wait_job(batch, namespace, job.name, "Complete")
    held_since(batch, namespace, job.name, "me", ago=50)
    seen = kube.get_job(job.name)
    assert seen is not None
    before = datetime.now(UTC) - timedelta(seconds=5)

    again = kube.claim(seen, "me", stale_after_s=60)

    assert again is not None
    assert again.annotations[CLAIMED_BY_ANNOTATION] == "me"
    assert datetime.fromisoformat(again.annotations[CLAIMED_AT_ANNOTATION]) > before
