"""Session fixtures: the real stack every boundary test talks to.

`MSTC_TEST_CLUSTER` picks where the stack comes from:

- ``local`` (default): the project's own local stack (stack/localstack.py). A stack that is
  already running (``make stack-up``) is reused and left running; otherwise the session starts
  one and stops it at the end, so ``make test`` leaves nothing behind.
- ``kind``: a kind cluster plus RabbitMQ and MinIO from testcontainers (stack/kindstack.py),
  for laptops with Docker. Skipped, with the missing tool named, where it cannot run.

Every test that reaches the `stack` fixture, however indirectly, is marked ``stack`` at
collection, so ``pytest -m "not stack"`` (``make test-unit``, ``make check``) is exactly the set
of tests that need no servers, whichever directory they live in.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.support.stack import StackInfo, kind_stack, local_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests whose fixture closure includes `stack`: they need the servers."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    mode = os.environ.get("MSTC_TEST_CLUSTER", "local")
    if mode == "local":
        yield from local_stack()
    elif mode == "kind":
        yield from kind_stack()
    else:
        pytest.fail(f"MSTC_TEST_CLUSTER={mode!r}: expected 'local' or 'kind'")


@pytest.fixture(scope="session")
def api_client(stack: StackInfo) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(stack.kubeconfig))


@pytest.fixture
def namespace(api_client: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards with everything in it."""
    core = k8s.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")
