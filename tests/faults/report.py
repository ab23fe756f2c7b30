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

__all__ = ["FaultRecord", "render_table", "update_readme", "write_results"]

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
