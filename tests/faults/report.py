"""The fault table: what each fault test did to the system and what the system did back.

Owns turning the records of one pytest run of the fault suite into the table the README
shows, so that table is produced by the suite and never typed by hand. Tests record through
the `fault` fixture (tests/faults/conftest.py); the session writes `results.json` beside this
file and, when every fault test ran, replaces the README's block between the two markers.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "FaultRecord",
    "fold_phase",
    "is_full_run",
    "read_results",
    "render_table",
    "titled_from",
    "update_readme",
    "write_results",
]

START = "<!-- fault-table:start (written by the fault suite: tests/faults/report.py) -->"
END = "<!-- fault-table:end -->"


@dataclass
class FaultRecord:
    """One fault test: the fault it injects, what it expects, what it saw, how it ended."""

    test: str
    fault: str = ""
    expected: str = ""
    observed: list[str] = field(default_factory=list)
    outcome: str = "not run"  # passed, failed, skipped
    detail: str = ""  # the skip reason or the first line of the failure

    def saw(self, text: str) -> None:
        self.observed.append(text)


def fold_phase(record: FaultRecord, when: str, outcome: str, detail: str) -> None:
    """Fold one phase's result (setup, call, teardown) into the row.

    The call phase always speaks; setup and teardown only when they did not pass, so a test
    broken before its body (a fixture failing, before or after `fault`) shows as failed
    rather than keeping an older row. The first failure's reason is the one kept.
    """
    if when != "call" and outcome == "passed":
        return
    if record.outcome == "failed":
        return
    record.outcome = outcome
    record.detail = detail


def is_full_run(
    collected: list[str], every_file: set[str], deselected: list[str], recorded: set[str]
) -> bool:
    """Whether a run speaks for the suite: every fault file collected, nothing deselected,
    and a row for every collected test (a test stopped short by -x has none)."""
    files = {Path(nodeid.split("::")[0]).name for nodeid in collected}
    return bool(collected) and files == every_file and not deselected and set(collected) <= recorded


def titled_from(records: list[FaultRecord], previous: list[FaultRecord]) -> None:
    """Give a row that never reached its own description (it broke in setup) the last run's.

    Only the fault and what is expected are taken over; what the system did is never copied.
    """
    before = {record.test: record for record in previous}
    for record in records:
        old = before.get(record.test)
        if old is not None and not record.fault:
            record.fault, record.expected = old.fault, old.expected


def read_results(path: Path) -> list[FaultRecord]:
    """The records a previous run wrote; none if there is no readable file."""
    try:
        rows = json.loads(path.read_text())
        return [FaultRecord(**row) for row in rows]
    except (OSError, ValueError, TypeError):
        return []


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def render_table(records: list[FaultRecord]) -> str:
    lines = [
        "| fault | expected | what the system did | result |",
        "|---|---|---|---|",
    ]
    for record in records:
        did = "; ".join(record.observed) if record.observed else "-"
        result = record.outcome if not record.detail else f"{record.outcome}: {record.detail}"
        lines.append(
            f"| {_cell(record.fault or record.test)} | {_cell(record.expected)} "
            f"| {_cell(did)} | {_cell(result)} |"
        )
    return "\n".join(lines)


def write_results(records: list[FaultRecord], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n")


def update_readme(readme: Path, table: str, footer: str) -> bool:
    """Replace the block between the markers; False when the README has no such block."""
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return False
    block = f"{START}\n{table}\n\n{footer}\n{END}"
    readme.write_text(text[:start] + block + text[end + len(END) :])
    return True
