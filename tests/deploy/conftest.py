"""Fixtures for the deployment tests: the chart, rendered or installed on the real stack.

The chart is installed once per module into `mstc-dev` under a unique release name (and a
unique ServiceAccount name, so a `make run` ServiceAccount `mstc` there is left alone), and
uninstalled at the end.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.stack import StackInfo

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "mstc-cloud-worker"
NAMESPACE = "mstc-dev"


def helm(stack: StackInfo, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return stack.run(stack.helm, *args, check=check)


def kubectl(
    stack: StackInfo, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """kubectl of the stack (admin kubeconfig); `stdin` feeds `-f -`."""
    return subprocess.run(
        [stack.env["KUBECTL_BIN"], *args],
        input=stdin,
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=check,
        timeout=180,
    )


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def render(
    stack: StackInfo, values: dict[str, str], *, release: str = "t", namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """`helm template` of the chart: its objects, in order."""
    out = helm(stack, "template", release, str(CHART), "-n", namespace, *set_args(values))
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    present = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]
    raise AssertionError(f"no {kind} {name} among {present}")


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    service_account: str

    @property
    def worker(self) -> str:
        return f"{self.name}-mstc-cloud-worker"

    @property
    def rabbit(self) -> str:
        return f"{self.name}-mstc-work-queue"

    @property
    def minio(self) -> str:
        return f"{self.name}-minio"


@pytest.fixture(scope="module")
def release(stack: StackInfo) -> Iterator[Release]:
    """The chart installed with its defaults (but a unique ServiceAccount) into mstc-dev."""
    suffix = uuid.uuid4().hex[:6]
    rel = Release(f"dt-{suffix}", NAMESPACE, f"mstc-{suffix}")
    helm(
        stack,
        "install",
        rel.name,
        str(CHART),
        "--namespace",
        rel.namespace,
        "--create-namespace",
        "--set",
        f"serviceAccount.name={rel.service_account}",
        "--wait",
        "--timeout",
        "120s",
    )
    try:
        yield rel
    finally:
        helm(stack, "uninstall", rel.name, "--namespace", rel.namespace, "--wait", check=False)
