"""Fixtures of the real node's tests: the core API, and a namespace ready for pods."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.support.kube import watch_until
from tests.support.realnode import why_not
from tests.support.stack import StackInfo


@pytest.fixture
def core(stack: StackInfo, api_client: k8s.ApiClient) -> k8s.CoreV1Api:
    if reason := why_not(stack):
        pytest.skip(reason)
    return k8s.CoreV1Api(api_client)


@pytest.fixture
def ns(core: k8s.CoreV1Api, namespace: str) -> str:
    """The test's namespace once its default ServiceAccount exists (pods are refused before)."""
    watch_until(
        core.list_namespaced_service_account,
        lambda _t, sa: sa.metadata.name == "default",
        namespace=namespace,
    )
    return namespace
