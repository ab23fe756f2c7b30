"""Fixtures for the client's tests: the worker's own fixtures, plus a client and the `mstc` command.

The worker fixtures (a real `python -m mstc_worker` per test, its own namespace and work queue)
are imported from tests.worker.conftest rather than copied, so both suites start the worker the
same way. Each test also gets its own bucket, so inputs and outputs of tests never mix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mstc_client import Client, ClientConfig
from tests.support.stack import StackInfo
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    make_worker,
    minio,
    minio_secret,
    work_queue,
    worker,
)

MSTC = Path(sys.executable).with_name("mstc")  # the console script installed in this venv


@pytest.fixture
def data_bucket() -> str:
    return f"client-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client_env(stack: StackInfo, work_queue: str, data_bucket: str) -> dict[str, str]:  # noqa: F811
    """The settings a user would export: the stack's, plus this test's queue and bucket."""
    return {**stack.env, "MSTC_WORK_QUEUE": work_queue, "MSTC_BUCKET": data_bucket}


@pytest.fixture
def mstc_client(client_env: dict[str, str]) -> Iterator[Client]:
    with Client(ClientConfig.from_env(client_env)) as client:
        yield client


def _coverage_env() -> dict[str, str]:
    """What `make test`'s coverage needs to follow into the command; nothing a user sets."""
    return {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}


def run_mstc(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run the real `mstc` console script, as a user would."""
    return subprocess.run(
        [str(MSTC), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_coverage_env(), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
