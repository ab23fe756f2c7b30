"""`mstc queue status|purge` over real HTTP, the flow's engine the in-memory one of
tests/flow/api_support.py (the purge itself runs for real in tests/flow/test_queue_stack.py).

Checked: the status and purge texts; the question, asked on a terminal (a pseudo-terminal
here, with the real `mstc` script) and answered yes or no; no question and no purge without a
terminal unless `--yes`; the read token refused on a purge.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from mstc_client.cli import main
from mstc_client.exit_codes import ExitCode
from tests.client.conftest import MSTC
from tests.flow.api_support import ADMIN_TOKEN, READ_TOKEN, FakePorts, running_api


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakePorts]]:
    ports = FakePorts()
    with running_api(ports) as url:
        yield url, ports


@pytest.fixture
def ports(served: tuple[str, FakePorts]) -> FakePorts:
    served[1].reset()
    return served[1]


@pytest.fixture
def env(served: tuple[str, FakePorts], ports: FakePorts) -> dict[str, str]:
    return {"MSTC_FLOW_URL": served[0], "MSTC_FLOW_TOKEN": ADMIN_TOKEN}


def mstc_script(env: dict[str, str], *args: str, stdin: Any) -> subprocess.CompletedProcess[str]:
    coverage = {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}
    full_env = {"PATH": os.environ["PATH"], **coverage, **env}
    return subprocess.run([str(MSTC), *args], env=full_env, stdin=stdin, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def at_a_terminal(env: dict[str, str], answer: bytes) -> subprocess.CompletedProcess[str]:
    primary, secondary = os.openpty()
    try:
        os.write(primary, answer)  # held by the terminal until the command reads its line
        return mstc_script(env, "queue", "purge", stdin=secondary)
    finally:
        os.close(secondary)
        os.close(primary)


def test_status_says_what_waits(capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> None:
    assert main(["queue", "status"], env) == ExitCode.SUCCEEDED
    assert capsys.readouterr().out == (
        "work queue mstc.queue.work: 3 waiting for a worker, 1 consumer; the workers hold 1 "
        "(their heartbeats)\nflow: 0 firings pending\n"
    )
    assert main(["queue", "status", "--json"], {**env, "MSTC_FLOW_TOKEN": READ_TOKEN}) == 0
    assert json.loads(capsys.readouterr().out)["ready"] == 3


def test_purge_with_yes_says_what_it_dropped(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], ports: FakePorts
) -> None:
    assert main(["queue", "purge", "--yes"], env) == ExitCode.SUCCEEDED
    assert capsys.readouterr().out == (
        "Purged 3 requests from the work queue: 1 firing, 0 pipeline tasks, 2 other (failure "
        f"reply sent to 1)\n  firing {'3' * 32}: purged\n"
    )
    assert ports.purges == 1


def test_purge_asks_at_a_terminal(env: dict[str, str], ports: FakePorts) -> None:
    declined = at_a_terminal(env, b"n\n")
    assert (declined.returncode, ports.purges) == (ExitCode.REJECTED, 0)
    assert declined.stderr == "Purge 3 waiting requests? [y/N] Not purged.\n"
    accepted = at_a_terminal(env, b"y\n")
    assert (accepted.returncode, ports.purges) == (ExitCode.SUCCEEDED, 1), accepted.stderr
    assert accepted.stdout.startswith("Purged 3 requests")


def test_purge_without_a_terminal_needs_yes_and_the_admin_token(
    env: dict[str, str], ports: FakePorts
) -> None:
    refused = mstc_script(env, "queue", "purge", stdin=subprocess.DEVNULL)
    assert refused.returncode == ExitCode.ERROR
    assert "stdin is not a terminal: give --yes" in refused.stderr
    read_only = {**env, "MSTC_FLOW_TOKEN": READ_TOKEN}
    forbidden = mstc_script(read_only, "queue", "purge", "--yes", stdin=subprocess.DEVNULL)
    assert forbidden.returncode == ExitCode.AUTH_FAILED
    assert ports.purges == 0
