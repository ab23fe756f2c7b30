"""The README's table of MSTC_FLOW_* settings is generated from `FlowSettings`, and checked here.

The table sits between two markers in the README ("Flows", "Settings"). It is rendered from
each field's variable, default and description, so a setting added, renamed or re-described
in flow/mstc_flow/settings.py fails this test until the README is regenerated:
`uv run --frozen python -m tests.unit.test_flow_settings_readme` rewrites the block.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from mstc_flow.settings import FlowSettings

README = Path(__file__).resolve().parents[2] / "README.md"
START = (
    "<!-- flow-settings:start"
    " (generated from FlowSettings: tests/unit/test_flow_settings_readme.py) -->"
)
END = "<!-- flow-settings:end -->"


def _default(value: object) -> str:
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if value == "":
        return "empty"
    return f"`{value}`"


def render_table() -> str:
    """The block, markers included: one row per setting that has a variable of its own."""
    rows = [START, "| variable | default | meaning |", "|---|---|---|"]
    for field in FlowSettings.model_fields.values():
        if not isinstance(field.validation_alias, str):
            continue  # `client`: the broker's and storage's variables, shared with mstc
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{field.validation_alias}` | {_default(field.default)} | {meaning} |")
    rows.append(END)
    return "\n".join(rows)


def readme_block(text: str) -> str:
    start = text.index(START)
    return text[start : text.index(END, start) + len(END)]


def test_the_readme_lists_every_flow_setting_as_settings_py_describes_it() -> None:
    assert readme_block(README.read_text(encoding="utf-8")) == render_table()


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    README.write_text(text.replace(readme_block(text), render_table()), encoding="utf-8")
