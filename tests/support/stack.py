"""What a test needs to know about the running stack, wherever it came from.

Both ways of getting a stack yield the same `StackInfo`: connection settings in the very
variable names the worker and client read (`env`), plus typed shortcuts for tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import localstack


@dataclass(frozen=True)
class StackInfo:
    env: dict[str, str]
    kind: str  # "local" or "kind"

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["KUBECONFIG"])

    @property
    def amqp_url(self) -> str:
        return self.env["MSTC_AMQP_URL"]

    @property
    def s3_host(self) -> str:
        return f"{self.env['MINIO_SERVICE_HOST']}:{self.env['MINIO_SERVICE_PORT']}"

    @property
    def s3_keys(self) -> tuple[str, str]:
        return self.env["MINIO_ROOT_USER"], self.env["MINIO_ROOT_PASSWORD"]

    @property
    def helm(self) -> str:
        return self.env["HELM_BIN"]

    @property
    def state_dir(self) -> Path | None:
        return Path(self.env["MSTC_STACK_DIR"]) if "MSTC_STACK_DIR" in self.env else None

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command (helm, kubectl, ...) with the stack's settings in its environment."""
        return subprocess.run(
            argv,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=180,
        )


def local_stack() -> Generator[StackInfo, None, None]:
    cfg = localstack.Config.from_env()
    reuse = localstack.all_running(cfg) and cfg.env_file.exists()
    if not reuse:
        localstack.down(cfg)  # leftovers of a crashed run would hold ports and stale state
        localstack.up(cfg)
    try:
        yield StackInfo(env=localstack.connection_env(cfg), kind="local")
    finally:
        if not reuse:
            localstack.down(cfg)


def kind_stack() -> Iterator[StackInfo]:
    missing = [tool for tool in ("docker", "kind") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"MSTC_TEST_CLUSTER=kind needs {' and '.join(missing)} on PATH")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("MSTC_TEST_CLUSTER=kind needs a running Docker engine (`docker info` failed)")
    import kindstack  # noqa: PLC0415  (imports testcontainers, which only this mode needs)

    with kindstack.KindStack(localstack.Config.from_env()) as env:
        yield StackInfo(env=env, kind="kind")
