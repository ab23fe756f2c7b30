"""The fault table's count of Jobs made (tests/support/jobs_made.py), against the real API server.

What the worker fault rows must be able to see: a second Job made under the name of one the
TTL deleted already.
"""

from __future__ import annotations

from kubernetes import client as k8s

from tests.support.jobs_made import JobsMade
from tests.support.kube import simulated_job, wait_gone


def test_a_job_deleted_by_its_ttl_and_made_again_counts_twice(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    batch = k8s.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, simulated_job("before"))
    made = JobsMade(api_client, namespace)
    made.start()
    try:
        assert made.names() == ["before"]  # already there when counting began

        batch.create_namespaced_job(
            namespace, simulated_job("same", run_for="1s", ttl_seconds_after_finished=0)
        )
        wait_gone(
            batch.list_namespaced_job, namespace=namespace, field_selector="metadata.name=same"
        )
        assert made.count() == 2  # gone, still counted

        batch.create_namespaced_job(namespace, simulated_job("same"))  # the name again
        assert made.names() == ["before", "same", "same"]
        assert made.count() == 3  # the markers of each count never count
        assert [j.metadata.name for j in batch.list_namespaced_job(namespace).items] == [
            "before",
            "same",
        ]  # nor stay behind
    finally:
        made.stop()
