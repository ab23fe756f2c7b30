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
from pathlib import Path
from typing import Any

import pytest

from tests.faults.report import FaultRecord, render_table, update_readme, write_results
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
    """Every fault file collected, nothing deselected, every collected test recorded."""
    files = {Path(nodeid.split("::")[0]).name for nodeid in _collected}
    every_file = {path.name for path in HERE.glob("test_*.py")}
    return (
        bool(_collected)
        and files == every_file
        and not _deselected
        and set(_collected) <= set(_records)
        and not session.config.option.collectonly
    )


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    record = _records.get(item.nodeid)
    if record is None and item.nodeid in _collected and report.skipped:
        record = _records.setdefault(item.nodeid, FaultRecord(test=item.nodeid))
    if record is not None and (report.when == "call" or report.outcome != "passed"):
        record.outcome = report.outcome
        if report.skipped and isinstance(report.longrepr, tuple):
            record.detail = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            record.detail = (report.longreprtext.strip().splitlines() or [""])[-1][:200]
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _records:
        return
    ordered = [_records[n] for n in sorted(_records, key=_order)]
    # Only a full run of the suite speaks for it: a partial one would shrink the table.
    if _full_run(session):
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
