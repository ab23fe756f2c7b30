"""A pipeline's task graph laid out for drawing: columns are stages, nodes tasks, edges needs.

Pure layout (no web library, no store), computed on the server so the page draws its graph
as inline SVG with no script and nothing fetched. A task's stage is the length of the longest
chain of needs before it (tasks that need nothing are stage 0), so every edge goes right.
Within a column tasks start in file order and are then ordered once by the mean row of what
they need (fewer crossings, still deterministic). Edges are cubic curves from the right side
of the needed task to the left side of the task. Over `MAX_DRAWN` tasks nothing is drawn
(the page shows the table), which keeps a 10,000-task pipeline's page small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_DRAWN", "Edge", "Layout", "Node", "layout", "stages_of"]

MAX_DRAWN = 400
NODE_WIDTH = 168
NODE_HEIGHT = 34
COLUMN_GAP = 56
ROW_GAP = 14
MARGIN = 8
_LABEL_CHARS = 22


@dataclass(frozen=True)
class Node:
    """A task's box: top-left corner, its state (the CSS class that colours it), its label."""

    name: str
    state: str
    stage: int
    x: int
    y: int
    label: str
    width: int = NODE_WIDTH
    height: int = NODE_HEIGHT


@dataclass(frozen=True)
class Edge:
    """`needs` -> `task`, drawn as the SVG path `path`."""

    needs: str
    task: str
    path: str


@dataclass(frozen=True)
class Layout:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int
    stages: int


def stages_of(tasks: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each task's stage (longest chain of needs before it), in a topological pass. Needs that
    name no task of the list are ignored; a cycle (never stored: the parser refuses it) leaves
    its tasks out of the answer rather than looping."""
    names = {str(task["name"]) for task in tasks}
    needs = {str(t["name"]): [n for n in t.get("needs") or () if n in names] for t in tasks}
    waiting = {name: len(needed) for name, needed in needs.items()}
    dependants: dict[str, list[str]] = {name: [] for name in needs}
    for name, needed in needs.items():
        for each in needed:
            dependants[each].append(name)
    stage = dict.fromkeys((name for name, count in waiting.items() if count == 0), 0)
    ready = list(stage)
    while ready:
        name = ready.pop()
        for after in dependants[name]:
            stage[after] = max(stage.get(after, 0), stage[name] + 1)
            waiting[after] -= 1
            if waiting[after] == 0:
                ready.append(after)
    return {name: value for name, value in stage.items() if waiting[name] == 0}


def _columns(tasks: Sequence[Mapping[str, Any]], stage: Mapping[str, int]) -> list[list[str]]:
    """Task names per stage: file order, then by the mean row of their needs."""
    columns: list[list[str]] = [[] for _ in range(max(stage.values(), default=-1) + 1)]
    for task in tasks:
        if task["name"] in stage:
            columns[stage[task["name"]]].append(str(task["name"]))
    needs = {str(t["name"]): list(t.get("needs") or ()) for t in tasks}
    row: dict[str, int] = {}
    for index, column in enumerate(columns):
        if index > 0:
            order = {name: position for position, name in enumerate(column)}

            def weight(name: str, order: dict[str, int] = order) -> tuple[float, int]:
                rows = [row[n] for n in needs[name] if n in row]
                return (sum(rows) / len(rows) if rows else float(order[name]), order[name])

            column.sort(key=weight)
        row.update((name, position) for position, name in enumerate(column))
    return columns


def _label(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


def layout(tasks: Sequence[Mapping[str, Any]]) -> Layout | None:
    """The drawing of `tasks` (dicts with "name", "state", "needs"); None over `MAX_DRAWN`."""
    if len(tasks) > MAX_DRAWN:
        return None
    stage = stages_of(tasks)
    columns = _columns(tasks, stage)
    state = {str(task["name"]): str(task.get("state") or "waiting") for task in tasks}
    placed: dict[str, Node] = {}
    for index, column in enumerate(columns):
        for position, name in enumerate(column):
            placed[name] = Node(
                name=name, state=state[name], stage=index, label=_label(name),
                x=MARGIN + index * (NODE_WIDTH + COLUMN_GAP),
                y=MARGIN + position * (NODE_HEIGHT + ROW_GAP),
            )  # fmt: skip
    edges = [
        Edge(needed, str(task["name"]), _curve(placed[needed], placed[str(task["name"])]))
        for task in tasks
        if task["name"] in placed
        for needed in task.get("needs") or ()
        if needed in placed
    ]
    tallest = max((len(column) for column in columns), default=0)
    return Layout(
        nodes=tuple(placed[name] for column in columns for name in column),
        edges=tuple(edges),
        width=2 * MARGIN + max(len(columns), 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP,
        height=2 * MARGIN + max(tallest, 1) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP,
        stages=len(columns),
    )


def _curve(start: Node, end: Node) -> str:
    x1, y1 = start.x + start.width, start.y + start.height // 2
    x2, y2 = end.x, end.y + end.height // 2
    bend = (x2 - x1) // 2
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
