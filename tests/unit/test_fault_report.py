"""The fault table's bookkeeping (tests/faults/report.py): how a test's phases become its row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.faults.report import (
    END,
    START,
    FaultRecord,
    fold_phase,
    is_full_run,
    read_results,
    render_table,
    titled_from,
    update_readme,
    write_results,
)


def row(test: str = "tests/faults/test_x.py::test_y", **fields: Any) -> FaultRecord:
    return FaultRecord(test=test, **fields)


def test_a_passing_setup_says_nothing_and_the_call_decides() -> None:
    record = row()
    fold_phase(record, "setup", "passed", "")
    assert record.outcome == "not run"
    fold_phase(record, "call", "passed", "")
    fold_phase(record, "teardown", "passed", "")
    assert (record.outcome, record.detail) == ("passed", "")


def test_a_setup_failure_makes_the_row_failed_with_its_reason() -> None:
    record = row()
    fold_phase(record, "setup", "failed", "in setup: TimeoutError: worker not ready")
    fold_phase(record, "teardown", "passed", "")
    assert (record.outcome, record.detail) == ("failed", "in setup: TimeoutError: worker not ready")


def test_the_first_failure_is_the_one_kept() -> None:
    record = row()
    fold_phase(record, "call", "failed", "AssertionError: 2 replies")
    fold_phase(record, "teardown", "failed", "in teardown: namespace stuck")
    assert record.detail == "AssertionError: 2 replies"


def test_a_teardown_failure_turns_a_passed_call_red() -> None:
    record = row()
    fold_phase(record, "call", "passed", "")
    fold_phase(record, "teardown", "failed", "in teardown: boom")
    assert (record.outcome, record.detail) == ("failed", "in teardown: boom")


def test_a_skip_in_setup_is_recorded_with_its_reason() -> None:
    record = row()
    fold_phase(record, "setup", "skipped", "needs the local stack")
    assert (record.outcome, record.detail) == ("skipped", "needs the local stack")


def test_a_row_broken_before_its_description_takes_the_last_runs_words_not_its_results() -> None:
    broken = row(outcome="failed", detail="in setup: boom")
    described = row("tests/faults/test_x.py::test_z", fault="new words", expected="new")
    previous = [
        row(fault="old fault", expected="old expected", observed=["old seen"], outcome="passed"),
        row("tests/faults/test_x.py::test_z", fault="old words", expected="old"),
    ]
    titled_from([broken, described], previous)
    assert (broken.fault, broken.expected) == ("old fault", "old expected")
    assert (broken.observed, broken.outcome) == ([], "failed")
    assert described.fault == "new words"


def test_results_round_trip_and_a_missing_or_bad_file_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    assert read_results(path) == []
    records = [row(fault="f", expected="e", observed=["o"], outcome="passed")]
    write_results(records, path)
    assert read_results(path) == records
    path.write_text("not json")
    assert read_results(path) == []


def test_a_failed_row_renders_red_with_its_reason_and_no_observations() -> None:
    record = row(fault="f", expected="one reply", outcome="failed", detail="in setup: x | y")
    table = render_table([record])
    assert table.splitlines()[-1] == "| f | one reply | - | failed: in setup: x \\| y |"


def test_the_readme_block_is_replaced_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{START}\nold table\n{END}\nafter\n")
    assert update_readme(readme, "new table", "footer")
    assert readme.read_text() == f"before\n{START}\nnew table\n\nfooter\n{END}\nafter\n"
    (tmp_path / "other.md").write_text("no markers")
    assert not update_readme(tmp_path / "other.md", "t", "f")


FILES = {"test_a.py", "test_b.py"}
RUN = ["tests/faults/test_a.py::test_1", "tests/faults/test_b.py::test_2"]


def test_a_full_run_is_every_file_nothing_deselected_every_test_recorded() -> None:
    assert is_full_run(RUN, FILES, [], set(RUN))
    assert not is_full_run(RUN[:1], FILES, [], set(RUN[:1]))  # one file only
    assert not is_full_run(RUN, FILES, [RUN[1] + "[x]"], set(RUN))  # -k deselected one
    assert not is_full_run(RUN, FILES, [], {RUN[0]})  # stopped short: no row for the second
    assert not is_full_run([], set(), [], set())  # nothing collected speaks for nothing
