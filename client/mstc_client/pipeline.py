"""The pipeline's model: expanded tasks, the graph between them, and the request each one sends.

A pipeline is what `mstc pipeline validate` checks offline and what the flow service will run,
so the model lives in the client, next to the catalog's. It is pure: `pipeline_files` turns a
file into a `Pipeline` (every `foreach` already expanded, every template filled); nothing here
reads files or talks to servers. The bucket is asked about only through a callable the caller
gives (`check_inputs`).

Objects: a task's `inputs` and `outputs` map a role to object names relative to the pipeline's
`prefix`; the object's key in the bucket is `<prefix>/<name>`. An input role read from a whole
expanded family (`{"task": "square", "output": "result"}` in the file) holds every name that
family writes under that role, in index order.

The graph: task B depends on task A when B names A in `after` (a family name means all its
expansions), or when B reads an object A writes. `stages()` are the topological levels: every
task of a stage depends only on tasks of earlier stages, so a stage's tasks may run in
parallel. `dependants(name)` is everything downstream: what a failure of `name` skips.
`check_graph` refuses two writers of one object and cycles (printed `a -> b -> a`, where
`x -> y` reads "y needs x").

The request: `request_for(task)` is the task's worker request with the pipeline's bucket as
input and output bucket, `prefix` the pipeline's prefix (so the worker's `FILE_PREFIX` names it
and a task's log is `<prefix>-<jobName>.log`), and the objects passed in the environment under
names the worker lets a submitter set (its reserved `MSTC_` names allow `MSTC_FLOW_*`):
`MSTC_FLOW_INPUT_<ROLE>` / `MSTC_FLOW_OUTPUT_<ROLE>` hold the object's key, or for a family
input the keys one per line; `MSTC_FLOW_PIPELINE` and `MSTC_FLOW_TASK` name the pipeline and
the task; an expanded task also gets `MSTC_FLOW_INDEX` and `MSTC_FLOW_ITEM` (the value; JSON
text unless it is a text).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mstc_client.errors import PipelineInvalid

__all__ = [
    "INDEX_ENV",
    "INPUT_ENV_PREFIX",
    "ITEM_ENV",
    "OUTPUT_ENV_PREFIX",
    "PIPELINE_ENV",
    "TASK_ENV",
    "Pipeline",
    "Task",
    "check_graph",
    "downstream",
    "role_env",
]

INPUT_ENV_PREFIX = "MSTC_FLOW_INPUT_"
OUTPUT_ENV_PREFIX = "MSTC_FLOW_OUTPUT_"
PIPELINE_ENV = "MSTC_FLOW_PIPELINE"
TASK_ENV = "MSTC_FLOW_TASK"
INDEX_ENV = "MSTC_FLOW_INDEX"
ITEM_ENV = "MSTC_FLOW_ITEM"


def role_env(prefix: str, role: str) -> str:
    """The environment variable a role's object keys are passed in (roles are `[a-z0-9_]`)."""
    return prefix + role.upper()


@dataclass(frozen=True)
class Task:
    """One task after expansion: `name` is unique (`<source>-<index>` for an expanded one).

    `request` holds the worker request fields (defaults merged, templates filled); `inputs`
    maps a role to its object names (one, or a family's several: `family_roles`); `after` the
    tasks named in `after`, as expanded names.
    """

    name: str
    source: str
    request: Mapping[str, Any]
    inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    family_roles: frozenset[str] = frozenset()
    index: int | None = None
    item: Any = None
    line: int = 0


@dataclass(frozen=True)
class Pipeline:
    """A pipeline as loaded: its tasks in file order, the bound on tasks running at once, and
    where its objects live (`bucket` None: the caller's bucket)."""

    name: str
    tasks: tuple[Task, ...]
    parallelism: int
    bucket: str | None
    prefix: str
    digest: str
    source: str = "<pipeline>"

    @cached_property
    def _by_name(self) -> dict[str, Task]:
        return {task.name: task for task in self.tasks}

    def task(self, name: str) -> Task:
        return self._by_name[name]

    def key(self, object_name: str) -> str:
        """The object's key in the bucket."""
        return f"{self.prefix}/{object_name}"

    @cached_property
    def writers(self) -> dict[str, str]:
        """Object name -> the task writing it (the first one; `check_graph` refuses a second)."""
        found: dict[str, str] = {}
        for task in self.tasks:
            for name in task.outputs.values():
                found.setdefault(name, task.name)
        return found

    @cached_property
    def _edges(self) -> dict[str, dict[str, str]]:
        """Task -> {task it depends on: the field that says so ("after", "inputs.<role>")}."""
        edges: dict[str, dict[str, str]] = {}
        for task in self.tasks:
            needs = edges.setdefault(task.name, {})
            for other in task.after:
                needs.setdefault(other, "after")
            for role, names in task.inputs.items():
                for name in names:
                    writer = self.writers.get(name)
                    if writer is not None:
                        needs.setdefault(writer, f"inputs.{role}")
        return edges

    def dependencies(self) -> dict[str, frozenset[str]]:
        """Each task -> the tasks it waits for (explicit `after` and inferred from objects)."""
        return {name: frozenset(needs) for name, needs in self._edges.items()}

    def stages(self) -> list[tuple[str, ...]]:
        """Topological levels, in file order within each: a stage's tasks may run together."""
        level: dict[str, int] = {}
        for name in _topological_order(self):
            needs = self._edges[name]
            level[name] = 1 + max((level[other] for other in needs), default=-1)
        stages: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for task in self.tasks:
            stages[level[task.name]].append(task.name)
        return [tuple(stage) for stage in stages]

    def dependants(self, name: str) -> frozenset[str]:
        """Every task downstream of `name`, transitively: what its failure skips."""
        return downstream(self._edges, name)

    def external_inputs(self) -> list[tuple[Task, str, str]]:
        """(task, role, object name) of every input no task of the pipeline writes."""
        return [
            (task, role, name)
            for task in self.tasks
            for role, names in task.inputs.items()
            for name in names
            if name not in self.writers
        ]

    def check_inputs(self, exists: Callable[[str], bool] | None) -> None:
        """Refuse an input no task writes that is not in the bucket.

        `exists` is asked with the object's key; None (offline, no bucket) refuses every such
        input, saying it must exist in the bucket.
        """
        for task, role, name in self.external_inputs():
            if exists is None:
                reason = f"{name!r} is written by no task, so it must exist in the bucket"
            elif not exists(self.key(name)):
                reason = f"{name!r} is written by no task and is not in the bucket"
            else:
                continue
            raise PipelineInvalid(self.source, task.name, f"inputs.{role}", reason, task.line)

    def request_for(self, task: Task, *, bucket: str | None = None) -> dict[str, Any]:
        """The worker request for `task` (`bucket` when the pipeline names none)."""
        chosen = self.bucket or bucket
        if chosen is None:
            raise PipelineInvalid(self.source, None, "bucket", "no bucket: name one")
        env = dict(task.request.get("env") or {})
        env.update({PIPELINE_ENV: self.name, TASK_ENV: task.name})
        if task.index is not None:
            env[INDEX_ENV] = str(task.index)
            env[ITEM_ENV] = task.item if isinstance(task.item, str) else json.dumps(task.item)
        for role, names in task.inputs.items():
            env[role_env(INPUT_ENV_PREFIX, role)] = "\n".join(self.key(n) for n in names)
        for role, name in task.outputs.items():
            env[role_env(OUTPUT_ENV_PREFIX, role)] = self.key(name)
        return {
            "jobName": task.name,
            **task.request,
            "inputBucket": chosen,
            "outputBucket": chosen,
            "prefix": self.prefix,
            "env": env,
        }


def downstream(needs: Mapping[str, Iterable[str]], name: str) -> frozenset[str]:
    """Every task that needs `name`, directly or through others, given each task's needs (the
    graph as the model holds it, or as a store keeps its edges)."""
    feeds: dict[str, list[str]] = {}
    for task, wanted in needs.items():
        for other in wanted:
            feeds.setdefault(other, []).append(task)
    found: set[str] = set()
    todo = list(feeds.get(name, ()))
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(feeds.get(current, ()))
    return frozenset(found)


def _topological_order(pipeline: Pipeline) -> list[str]:
    """Tasks ordered so each comes after all it needs (Kahn's algorithm; cycles refused first)."""
    edges = pipeline._edges
    waiting = {name: len(needs) for name, needs in edges.items()}
    feeds: dict[str, list[str]] = {}
    for name, needs in edges.items():
        for other in needs:
            feeds.setdefault(other, []).append(name)
    ready = [task.name for task in pipeline.tasks if waiting[task.name] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop()
        order.append(current)
        for after in feeds.get(current, ()):
            waiting[after] -= 1
            if waiting[after] == 0:
                ready.append(after)
    if len(order) != len(edges):
        _refuse_cycle(pipeline, {name for name, count in waiting.items() if count})
    return order


def check_graph(pipeline: Pipeline) -> None:
    """Refuse two tasks (or two roles) writing one object, and any cycle."""
    seen: dict[str, tuple[str, str]] = {}
    for task in pipeline.tasks:
        for role, name in task.outputs.items():
            if name in seen:
                other, other_role = seen[name]
                raise PipelineInvalid(
                    pipeline.source, task.name, f"outputs.{role}",
                    f"{name!r} is already written by task {other} (outputs.{other_role}); "
                    "an object has one writer", task.line,
                )  # fmt: skip
            seen[name] = (task.name, role)
    _topological_order(pipeline)


def _refuse_cycle(pipeline: Pipeline, stuck: set[str]) -> None:
    """Find one cycle among the tasks Kahn's algorithm could not order, and refuse it."""
    edges = pipeline._edges
    # Every stuck task waits for another stuck task; following such waits must revisit one.
    current = next(task.name for task in pipeline.tasks if task.name in stuck)
    path: list[str] = []
    while current not in path:
        path.append(current)
        current = next(other for other in edges[current] if other in stuck)
    cycle = path[path.index(current) :]
    # `cycle` follows "needs"; printed in the direction data flows: x -> y reads "y needs x".
    flow = [cycle[0], *reversed(cycle[1:]), cycle[0]]
    closing_task, closing_need = cycle[0], cycle[1] if len(cycle) > 1 else cycle[0]
    task = pipeline.task(closing_task)
    raise PipelineInvalid(
        pipeline.source, task.name, edges[closing_task][closing_need],
        "a cycle: " + " -> ".join(flow), task.line,
    )  # fmt: skip
