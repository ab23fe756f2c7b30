"""A pipeline file's task list made into `Task`s: defaults merged, foreach expanded, templates
filled, `after` and family inputs resolved to task names.

Defaults: every task starts from `defaults`; a task's own field replaces the default, except
`env`, `labels` and `annotations` (merged key by key) and `resources` (merged per `requests` /
`limits`, key by key), so a task adds to the defaults rather than restating them.

Expansion: a task with `foreach` becomes one task per value, named `<name>-<index>` (index from
0). Every string of the task (request fields, input and output names, `after`) may hold
`{{ item }}` (the value; `{{ item.key }}` for a field of an object value), `{{ index }}`,
`{{ task }}` (the expanded name) and `{{ pipeline }}`. As in the catalog, a string that is one
placeholder and nothing else keeps the value's JSON type (`"timeOut": "{{ item }}"` is a
number), except in fields that must be texts (env, command, args, names), where it becomes its
JSON text. A task without `foreach` has no item or index: using them is refused.

References between tasks: `after` names a task; a name with expansions means all of them, and
one expansion can be named as `<name>-<index>` (so `"after": ["prep-{{ index }}"]` pairs
expansions one to one). An input is an object name, or `{"task": T, "output": ROLE}`: the
objects every expansion of T writes under ROLE, in index order (how a merging task reads a
whole family). Names must stay unambiguous: no two tasks expand to one name, and a family's
name is no other task's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mstc_client.catalog import PLACEHOLDER, walk
from mstc_client.pipeline import Task
from mstc_client.pipeline_fields import (
    FAMILY_KEYS,
    MAX_TASKS,
    PIPELINE_SET_FIELDS,
    REQUEST_FIELDS,
    Where,
    check_label,
    check_object_name,
    check_request,
    check_role,
    foreach_values,
)

__all__ = ["MAX_REFERENCES", "TASK_KEYS", "expand_tasks"]

MAX_REFERENCES = 100_000  # input object names over all tasks (families multiply them)
_OWN_KEYS = frozenset({"name", "foreach", "inputs", "outputs", "after"})
TASK_KEYS = _OWN_KEYS | frozenset(REQUEST_FIELDS)
_MERGED = frozenset({"env", "labels", "annotations"})
_TEXT_FIELDS = frozenset({"env", "command", "args", "labels", "annotations", "jobName", "image",
                          "taskQueue", "inputs", "outputs", "after"})  # fmt: skip


@dataclass(frozen=True)
class _Draft:
    """An expanded task before its references to other tasks are resolved."""

    task: Task
    after: list[str]
    inputs: dict[str, Any]  # role -> an object name, or a family reference {task, output}


def expand_tasks(
    listed: list[Any], defaults: Mapping[str, Any], lines: list[int], *, source: str, pipeline: str
) -> tuple[Task, ...]:
    """The tasks of `listed` (the file's `tasks`), expanded and checked, in file order."""
    drafts: list[_Draft] = []
    families: dict[str, list[str]] = {}
    for position, raw in enumerate(listed):
        line = lines[position] if position < len(lines) else 0
        name, expanded = _expand_one(raw, defaults, Where(source, None, line), pipeline)
        if name in families:
            raise Where(source, name, line).refuse("name", "another task has this name")
        families[name] = [draft.task.name for draft in expanded]
        drafts += expanded
        if len(drafts) > MAX_TASKS:
            field = "foreach" if "foreach" in raw else "name"
            raise Where(source, name, line).refuse(field, f"over {MAX_TASKS} tasks in all")
    _check_names(drafts, families, source)
    outputs = {draft.task.name: draft.task.outputs for draft in drafts}
    resolved = [_resolve(draft, families, outputs, source) for draft in drafts]
    if sum(len(names) for task in resolved for names in task.inputs.values()) > MAX_REFERENCES:
        raise Where(source, None).refuse("inputs", f"over {MAX_REFERENCES} object references")
    return tuple(resolved)


def _expand_one(
    raw: Any, defaults: Mapping[str, Any], where: Where, pipeline: str
) -> tuple[str, list[_Draft]]:
    if not isinstance(raw, Mapping):
        raise where.refuse("tasks", "each task must be a mapping with at least 'name'")
    name = check_label(raw.get("name"), where)
    where = Where(where.source, name, where.line)
    placed = sorted(set(raw) & PIPELINE_SET_FIELDS)
    if placed:
        raise where.refuse(placed[0], "set by the pipeline: use its top-level bucket and prefix")
    unknown = sorted(set(raw) - TASK_KEYS)
    if unknown:
        raise where.refuse(unknown[0], "unknown key; known: " + ", ".join(sorted(TASK_KEYS)))
    if "foreach" not in raw:
        return name, [_draft(raw, defaults, _Values(pipeline, name, None, None), where)]
    drafts = []
    for index, item in enumerate(foreach_values(raw["foreach"], where)):
        values = _Values(pipeline, f"{name}-{index}", index, item)
        drafts.append(_draft(raw, defaults, values, Where(where.source, values.task, where.line)))
    return name, drafts


def _draft(
    raw: Mapping[str, Any], defaults: Mapping[str, Any], values: _Values, where: Where
) -> _Draft:
    check_label(values.task, where)
    body = _merged(defaults, {k: v for k, v in raw.items() if k not in ("name", "foreach")})
    filled = {key: _fill(value, values, where, key, key not in _TEXT_FIELDS)
              for key, value in body.items()}  # fmt: skip
    request = {key: value for key, value in filled.items() if key in REQUEST_FIELDS}
    check_request(request, where)
    outputs = _roles(filled.get("outputs"), where, "outputs")
    for role, object_name in outputs.items():
        check_object_name(object_name, where, f"outputs.{role}")
    after = filled.get("after", [])
    if not isinstance(after, list) or not all(isinstance(n, str) for n in after):
        raise where.refuse("after", f"must be a list of task names; got {after!r}")
    task = Task(name=values.task, source=str(raw["name"]), request=request, outputs=outputs,
                index=values.index, item=values.item, line=where.line)  # fmt: skip
    return _Draft(task, after, _roles(filled.get("inputs"), where, "inputs"))


def _roles(value: Any, where: Where, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise where.refuse(
            field, 'must be a mapping of role to object name, e.g. {"data": "a.csv"}'
        )
    return {check_role(role, where, field): item for role, item in value.items()}


def _merged(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    body = {**defaults, **own}
    for key in _MERGED & set(defaults) & set(own):
        if isinstance(defaults[key], Mapping) and isinstance(own[key], Mapping):
            body[key] = {**defaults[key], **own[key]}
    base, mine = defaults.get("resources"), own.get("resources")
    if isinstance(base, Mapping) and isinstance(mine, Mapping):
        merged = {**base, **mine}
        for part in ("requests", "limits"):
            if isinstance(base.get(part), Mapping) and isinstance(mine.get(part), Mapping):
                merged[part] = {**base[part], **mine[part]}
        body["resources"] = merged
    return body


def _check_names(drafts: list[_Draft], families: dict[str, list[str]], source: str) -> None:
    seen: dict[str, str] = {}
    for draft in drafts:
        task = draft.task
        if task.name in seen or (task.name in families and task.name != task.source):
            first = seen.get(task.name, task.name)
            raise Where(source, task.name, task.line).refuse(
                "name", f"{task.name!r} names two tasks (also task {first}); names must be unique"
            )
        seen[task.name] = task.source


def _resolve(
    draft: _Draft,
    families: dict[str, list[str]],
    outputs: dict[str, Mapping[str, str]],
    source: str,
) -> Task:
    where = Where(source, draft.task.name, draft.task.line)
    after: list[str] = []
    for name in draft.after:
        after += _members(name, families, outputs, where, "after")
    inputs: dict[str, tuple[str, ...]] = {}
    family_roles: set[str] = set()
    for role, value in draft.inputs.items():
        field = f"inputs.{role}"
        if isinstance(value, Mapping):
            inputs[role] = _family(value, families, outputs, where, field)
            family_roles.add(role)
        else:
            inputs[role] = (check_object_name(value, where, field),)
    task = draft.task
    return Task(name=task.name, source=task.source, request=task.request, inputs=inputs,
                outputs=task.outputs, after=tuple(dict.fromkeys(after)),
                family_roles=frozenset(family_roles), index=task.index, item=task.item,
                line=task.line)  # fmt: skip


def _members(
    name: str, families: dict[str, list[str]], outputs: Mapping[str, Any], where: Where, field: str
) -> list[str]:
    if name in families:
        return families[name]
    if name in outputs:
        return [name]
    raise where.refuse(field, f"{name!r} is no task of this pipeline")


def _family(
    ref: Mapping[str, Any],
    families: dict[str, list[str]],
    outputs: dict[str, Mapping[str, str]],
    where: Where,
    field: str,
) -> tuple[str, ...]:
    if set(ref) != FAMILY_KEYS or not all(isinstance(v, str) for v in ref.values()):
        raise where.refuse(field, 'an object name, or {"task": NAME, "output": ROLE}')
    members = _members(ref["task"], families, outputs, where, f"{field}.task")
    missing = [member for member in members if ref["output"] not in outputs[member]]
    if missing:
        raise where.refuse(f"{field}.output", f"task {missing[0]} has no output {ref['output']!r}")
    return tuple(outputs[member][ref["output"]] for member in members)


@dataclass(frozen=True)
class _Values:
    """What a task's templates may name."""

    pipeline: str
    task: str
    index: int | None
    item: Any

    def look_up(self, name: str) -> Any:
        head, _, path = name.partition(".")
        if head in ("item", "index") and self.index is None:
            raise LookupError(f"{{{{ {name} }}}} needs a foreach, and this task has none")
        if head == "item":
            return walk(self.item, path, "item", name) if path else self.item
        if head in ("index", "task", "pipeline") and not path:
            return getattr(self, head)
        raise LookupError(
            f"unknown placeholder {{{{ {name} }}}}; known: item, item.<key>, index, task, pipeline"
        )


def _fill(value: Any, values: _Values, where: Where, field: str, typed: bool) -> Any:
    if isinstance(value, str):
        try:
            return _fill_text(value, values, typed)
        except LookupError as exc:
            raise where.refuse(field, str(exc)) from None
    if isinstance(value, Mapping):
        return {k: _fill(v, values, where, f"{field}.{k}", typed) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values, where, f"{field}.{i}", typed) for i, v in enumerate(value)]
    return value


def _fill_text(text: str, values: _Values, typed: bool) -> Any:
    whole = PLACEHOLDER.fullmatch(text)
    if whole and typed:
        return values.look_up(whole.group(1))

    def one(match: re.Match[str]) -> str:
        found = values.look_up(match.group(1))
        return found if isinstance(found, str) else json.dumps(found)

    filled = PLACEHOLDER.sub(one, text)
    if "{{" in PLACEHOLDER.sub("", text):
        raise LookupError(f"{text!r} holds '{{{{' that is not a placeholder {{{{ name }}}}")
    return filled
