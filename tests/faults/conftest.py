"""The fault suite: each test injects one fault into the real stack and checks the outcome.

Every test here carries the `faults` marker (``pytest -m faults`` runs the suite alone) and
records, through the `fault` fixture, the fault it injects, what it expects and what it saw.
At the end of the session the records go to ``tests/faults/results.json``; when every fault
test was collected and run, the README's fault table is rewritten from them, so the table
always tells what the last full run did.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

import localstack
from tests.faults.report import (
    FaultRecord,
    fold_phase,
    is_full_run,
    read_results,
    render_table,
    titled_from,
    update_readme,
    write_results,
)
from tests.support.events import EventTap
from tests.support.jobs_made import JobsMade
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    bucket,
    client,
    make_worker,
    minio,
    minio_secret,
    work_queue,
    worker,
)

HERE = Path(__file__).parent
README = HERE.parent.parent / "README.md"

_records: dict[str, FaultRecord] = {}
_collected: list[str] = []  # in collection order, which is the table's order


_deselected: list[str] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(i.nodeid for i in items if Path(str(i.fspath)).is_relative_to(HERE))


def _full_run(session: pytest.Session) -> bool:
    every_file = {path.name for path in HERE.glob("test_*.py")}
    full = is_full_run(_collected, every_file, _deselected, set(_records))
    return full and not session.config.option.collectonly


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)
            _collected.append(item.nodeid)


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> FaultRecord:
    """This test's line of the fault table: set `.fault` and `.expected`, call `.saw(...)`."""
    record = _records.setdefault(request.node.nodeid, FaultRecord(test=request.node.nodeid))
    return record


@pytest.fixture
def jobs_made(api_client: k8s.ApiClient, namespace: str) -> Iterator[JobsMade]:
    """The Jobs made in the test's namespace, counted by the API server's events from now on.

    Ask for it before the fault (fixtures are set up before the body runs): every "Jobs made"
    figure of the table is its `count()`, which sees a Job the TTL deleted already.
    """
    made = JobsMade(api_client, namespace)
    made.start()
    yield made
    made.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if item.nodeid not in _collected:
        return report
    record = _records.get(item.nodeid)
    if record is None and report.outcome != "passed":
        # Broken or skipped before it asked for `fault`: still its row, never an old one.
        record = _records.setdefault(item.nodeid, FaultRecord(test=item.nodeid))
    if record is not None:
        fold_phase(record, report.when, report.outcome, _detail(report))
    return report


def _detail(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        phase = "" if report.when == "call" else f"in {report.when}: "
        crash = getattr(report.longrepr, "reprcrash", None)
        reason = crash.message if crash is not None else report.longreprtext.strip()
        return phase + (reason.splitlines() or [""])[0][:200]
    return ""


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _records:
        return
    ordered = [_records[n] for n in sorted(_records, key=_order)]
    # Only a full run of the suite speaks for it: a partial one would shrink the table.
    if _full_run(session):
        titled_from(ordered, read_results(HERE / "results.json"))
        write_results(ordered, HERE / "results.json")
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        footer = (
            f"Written by the fault suite on {when} ({len(ordered)} faults, "
            f"{sum(r.outcome == 'passed' for r in ordered)} passed; "
            f"{platform.node() and 'machine: ' + str(platform.machine())}, "
            f"Python {platform.python_version()})."
        )
        update_readme(README, render_table(ordered), footer)


def _order(nodeid: str) -> tuple[int, str]:
    return (_collected.index(nodeid) if nodeid in _collected else len(_collected), nodeid)


# Fixtures of the rows that stop the stack's servers or count lifecycle events.
@pytest.fixture
def local_cfg(stack: StackInfo) -> localstack.Config:
    if stack.kind != "local":
        pytest.skip("stops and starts servers of the local stack; this stack's are not ours")
    return localstack.Config.from_env()


@pytest.fixture
def durable_client(stack: StackInfo) -> Iterator[AmqpClient]:
    amqp = AmqpClient(stack, durable=True)
    yield amqp
    amqp.close()


@pytest.fixture
def tap(stack: StackInfo) -> Iterator[EventTap]:
    events = EventTap(stack)
    yield events
    events.close()
