"""`mstc pipeline run|status|retry|cancel|ls`: pipelines on the flow service's API.

`run FILE` checks the file first, as `mstc pipeline validate --no-bucket-check` does (same
parser, so a cycle, two writers of one object or an unknown `after` is refused here, exit 5,
before anything is sent), then posts the file's text as it is (JSON, or YAML by its name or
`--format`) to `POST /api/v1/pipelines`. The flow parses it again with the same code, checks
the inputs no task writes against the bucket (which this command cannot see without the
storage keys) and answers the id, printed alone on stdout so a script can keep it.
`--wait` then follows the pipeline: one line per task state change as the API shows it
(asked every second: the API cannot be awaited), the counts at the end, and the exit code
0 when it succeeded, 1 when it failed or was cancelled. The flow being unreachable for a
while (a restart) is waited out for up to two minutes.

`status ID` prints the counts (Waiting / Queued / Running / Done / Failed / Skipped /
Cancelled) and the tasks in file order; `retry ID [--task NAME]` sends failed, skipped and
cancelled tasks again (or NAME and its skipped dependants), as new attempts; `cancel ID`
cancels waiting tasks and the running Jobs; `ls` lists pipelines, most recent first. All take
`--json` (the API's JSON) and `--url`; exit codes as the other flow commands (`cli_flow`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mstc_client.cli_flow import add_api_command, emit, table
from mstc_client.cli_pipeline import load_pipeline_file
from mstc_client.errors import ConfigError, FlowUnreachable
from mstc_client.exit_codes import ExitCode
from mstc_client.flow_api import FlowApi
from mstc_client.pipeline_files import FORMATS

__all__ = ["add_pipeline_api_commands"]

COUNTED = (("waiting", "Waiting"), ("queued", "Queued"), ("running", "Running"),
           ("succeeded", "Done"), ("failed", "Failed"), ("skipped", "Skipped"),
           ("cancelled", "Cancelled"))  # fmt: skip
_POLL_SECONDS = 1.0
_UNREACHABLE_FOR = 120.0


def add_pipeline_api_commands(pipeline_commands: Any) -> None:
    """Add run, status, retry, cancel and ls to the `mstc pipeline` subcommands."""
    add = add_api_command
    run = add(pipeline_commands, "run", "check a pipeline file and run it (admin token)", _run)
    run.add_argument("file", metavar="FILE", help="the pipeline file ('-' for stdin)")
    run.add_argument(
        "--wait", action="store_true",
        help="follow its tasks until it ends; exit 0 succeeded, 1 failed or cancelled",
    )  # fmt: skip
    run.add_argument(
        "--format", choices=FORMATS, help="json or yaml (default: yaml for .yaml/.yml, else json)"
    )
    status = add(pipeline_commands, "status", "a pipeline's counts and tasks", _status)
    retry = add(pipeline_commands, "retry", "run failed/skipped/cancelled tasks again (admin)",
                _retry)  # fmt: skip
    retry.add_argument("--task", metavar="NAME", help="only this task and its skipped dependants")
    cancel = add(pipeline_commands, "cancel", "cancel its waiting tasks and running Jobs (admin)",
                 _cancel)  # fmt: skip
    for command in (status, retry, cancel):
        command.add_argument("id", metavar="ID", help="the pipeline's id (p-...)")
    ls = add(pipeline_commands, "ls", "pipelines, most recent first", _ls)
    ls.add_argument("--state", choices=("running", "succeeded", "failed", "cancelled"))
    ls.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (50)")


def _run(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    text, pipeline = load_pipeline_file(args.file, args.format)  # refused: exit 5, as validate
    fmt = args.format or ("yaml" if args.file.lower().endswith((".yaml", ".yml")) else "json")
    answer = api.submit_pipeline(text.encode(), fmt)
    if args.json and not args.wait:
        emit(json.dumps(answer))
        return ExitCode.SUCCEEDED
    if not args.json:
        emit(str(answer.get("id")))
        emit(f"pipeline {pipeline.name}: {answer.get('tasks')} tasks in {answer.get('stages')} "
             f"stages, submitted as {answer.get('id')}", sys.stderr)  # fmt: skip
    if not args.wait:
        return ExitCode.SUCCEEDED
    return _follow(api, str(answer["id"]), quiet=bool(args.json))


def _follow(api: FlowApi, pipeline_id: str, *, quiet: bool) -> ExitCode:
    """Poll until the pipeline ends, printing each task's new state; its exit code."""
    seen: dict[str, str] = {}
    unreachable_since: float | None = None
    while True:
        try:
            shown = api.pipeline(pipeline_id)
            unreachable_since = None
        except FlowUnreachable:
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > _UNREACHABLE_FOR:
                raise
            time.sleep(_POLL_SECONDS)
            continue
        for task in shown.get("tasks") or []:
            state = str(task.get("state"))
            if not quiet and seen.get(task["name"]) != state:
                reason = f"  {task['reason']}" if task.get("reason") else ""
                emit(f"{_clock()}  {task['name']}  {state}{reason}")
            seen[task["name"]] = state
        if shown.get("state") != "running":
            break
        time.sleep(_POLL_SECONDS)  # the API cannot be awaited: asked again in a second
    emit(json.dumps(shown) if quiet else
         f"pipeline {pipeline_id} {shown.get('state')}: {_counts(shown)}")  # fmt: skip
    return ExitCode.SUCCEEDED if shown.get("state") == "succeeded" else ExitCode.JOB_FAILED


def _clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def _counts(shown: Mapping[str, Any]) -> str:
    counts = shown.get("counts") or {}
    return "  ".join(f"{label} {counts.get(state, 0)}" for state, label in COUNTED)


def _text(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def _status(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    shown = api.pipeline(args.id)
    if args.json:
        emit(json.dumps(shown))
        return ExitCode.SUCCEEDED
    lines = [
        f"pipeline {shown.get('id')} {shown.get('name')}: {shown.get('state')}, created "
        f"{_text(shown.get('createdAt'))}, finished {_text(shown.get('finishedAt'))}, "
        f"parallelism {_text(shown.get('parallelism'))}",
    ]
    if shown.get("reason"):
        lines.append(f"reason: {shown['reason']}")
    lines.append(_counts(shown))
    rows = [(str(task.get("name")), _text(task.get("state")), _text(task.get("attempts")),
             _text(task.get("jobName")), _text(task.get("startedAt")),
             _text(task.get("finishedAt")), _text(task.get("reason")))
            for task in shown.get("tasks") or []]  # fmt: skip
    lines.append(table(("TASK", "STATE", "ATTEMPTS", "JOB", "STARTED", "FINISHED", "REASON"),
                       rows))  # fmt: skip
    emit("\n".join(lines))
    return ExitCode.SUCCEEDED


def _retry(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    answer = api.retry_pipeline(args.id, args.task)
    retried = [str(name) for name in answer.get("retried") or []]
    emit(json.dumps(answer) if args.json else
         f"pipeline {args.id}: {len(retried)} {'task' if len(retried) == 1 else 'tasks'} "
         f"to run again: {', '.join(retried) or '-'}")  # fmt: skip
    return ExitCode.SUCCEEDED


def _cancel(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    shown = api.cancel_pipeline(args.id)
    emit(json.dumps(shown) if args.json else
         f"pipeline {args.id} {shown.get('state')}: {_counts(shown)}")  # fmt: skip
    return ExitCode.SUCCEEDED


def _ls(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1; got {args.limit}.")
    items = api.pipelines(args.state, args.limit)
    if args.json:
        emit(json.dumps({"items": items}))
        return ExitCode.SUCCEEDED
    rows = [(str(item.get("id")), _text(item.get("name")), _text(item.get("state")),
             _done(item), _text(item.get("createdAt")), _text(item.get("finishedAt")))
            for item in items]  # fmt: skip
    emit(table(("ID", "NAME", "STATE", "DONE", "CREATED", "FINISHED"), rows))
    return ExitCode.SUCCEEDED


def _done(item: Mapping[str, Any]) -> str:
    counts = item.get("counts") or {}
    total = sum(int(value) for value in counts.values())
    return f"{counts.get('succeeded', 0)}/{total}"
