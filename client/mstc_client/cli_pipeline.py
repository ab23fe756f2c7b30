"""`mstc pipeline validate FILE`: check a pipeline file offline and show what would run together.

Offline on purpose, like `mstc catalog validate`: no broker, no API, no settings. The file is
parsed by the code the flow service will run it with (`mstc_client.pipeline_files`), so what
passes here loads there, but for one check: an input no task writes must exist in the bucket,
which offline validation cannot see. Such inputs are refused unless `--no-bucket-check` is
given, and are then listed as "needed from the bucket".

Output: one line per stage (the tasks that may run in parallel; a family's consecutive
expansions shortened to `square-0..square-7`), then the task count, the stage count and the
pipeline's parallelism; or with `--json` one object. A refused file prints
"SOURCE[, line N]: task T: FIELD: REASON" on stderr and exits 5 (`ExitCode.ERROR`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from mstc_client.errors import PipelineInvalid
from mstc_client.exit_codes import ExitCode
from mstc_client.pipeline import Pipeline
from mstc_client.pipeline_files import FORMATS, MAX_PIPELINE_BYTES, decode_pipeline, parse_pipeline

__all__ = ["add_pipeline_commands", "load_pipeline_file", "pipeline_main"]


def add_pipeline_commands(commands: Any) -> Any:
    """Add `mstc pipeline validate`; returns `pipeline`'s subcommands, to which
    `cli_pipeline_api` adds the commands on the flow API (run, status, retry, cancel, ls)."""
    pipeline = commands.add_parser("pipeline", help="pipelines: task graphs from a file")
    pipeline_commands = pipeline.add_subparsers(dest="pipeline_command", required=True)
    validate = pipeline_commands.add_parser(
        "validate",
        help="check a pipeline file offline and print its stages; exit 5 naming the problem",
    )
    validate.add_argument("file", metavar="FILE", help="the pipeline file ('-' for stdin)")
    validate.add_argument("--json", action="store_true", help="print one JSON object")
    validate.add_argument(
        "--format", choices=FORMATS, help="json or yaml (default: yaml for .yaml/.yml, else json)"
    )
    validate.add_argument(
        "--no-bucket-check",
        action="store_true",
        help="accept inputs no task writes (they must exist in the bucket when it runs)",
    )
    # Offline: run before any settings are read (cli.main runs a command's own handler).
    validate.set_defaults(handler=lambda args, _env: pipeline_main(args))
    return pipeline_commands


def pipeline_main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `mstc pipeline validate`; returns the exit code."""
    out = out or sys.stdout
    try:
        _text, pipeline = load_pipeline_file(args.file, args.format)
        if not args.no_bucket_check:
            pipeline.check_inputs(None)
    except PipelineInvalid as exc:
        if args.json:
            problem = {"status": "invalid", "source": exc.source, "task": exc.task,
                       "field": exc.field, "line": exc.line, "reason": exc.reason,
                       "exitCode": int(ExitCode.ERROR)}  # fmt: skip
            out.write(json.dumps(problem) + "\n")
        sys.stderr.write(f"{exc}\n")
        return int(ExitCode.ERROR)
    out.write((json.dumps(_as_object(pipeline)) if args.json else _as_text(pipeline)) + "\n")
    return int(ExitCode.SUCCEEDED)


def load_pipeline_file(path: str, fmt: str | None) -> tuple[str, Pipeline]:
    """The file's text ('-': stdin) and the pipeline it holds, checked as far as it can be
    offline (all but the inputs that must be in the bucket); PipelineInvalid if refused."""
    source = "<stdin>" if path == "-" else path
    text = _read(path, source)
    return text, parse_pipeline(text, source=source, fmt=fmt)


def _read(path: str, source: str) -> str:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_PIPELINE_BYTES + 1)
        else:
            with Path(path).open("rb") as stream:
                data = stream.read(MAX_PIPELINE_BYTES + 1)  # enough to see it is too big
    except OSError as exc:
        raise PipelineInvalid(source, None, None, f"cannot read it: {exc.strerror or exc}") from exc
    return decode_pipeline(data, source=source)


def _needed(pipeline: Pipeline) -> list[str]:
    return sorted({pipeline.key(name) for _task, _role, name in pipeline.external_inputs()})


def _as_object(pipeline: Pipeline) -> dict[str, Any]:
    dependencies = pipeline.dependencies()
    return {
        "status": "valid",
        "source": pipeline.source,
        "name": pipeline.name,
        "digest": pipeline.digest,
        "taskCount": len(pipeline.tasks),
        "parallelism": pipeline.parallelism,
        "bucket": pipeline.bucket,
        "prefix": pipeline.prefix,
        "stages": [list(stage) for stage in pipeline.stages()],
        "neededFromBucket": _needed(pipeline),
        "tasks": [
            {
                "name": task.name,
                "source": task.source,
                "line": task.line,
                "dependsOn": sorted(dependencies[task.name]),
                "inputs": {role: list(names) for role, names in task.inputs.items()},
                "outputs": dict(task.outputs),
            }
            for task in pipeline.tasks
        ],
    }


def _as_text(pipeline: Pipeline) -> str:
    stages = pipeline.stages()
    lines = [
        f"stage {number}: {_shortened(pipeline, stage)}"
        for number, stage in enumerate(stages, start=1)
    ]
    needed = _needed(pipeline)
    if needed:
        lines.append("needed from the bucket (not checked): " + ", ".join(needed))
    count = len(pipeline.tasks)
    lines.append(
        f"{pipeline.source}: pipeline {pipeline.name}, {count} {'task' if count == 1 else 'tasks'}"
        f" in {len(stages)} {'stage' if len(stages) == 1 else 'stages'}, "
        f"parallelism {pipeline.parallelism}, valid"
    )
    return "\n".join(lines)


def _shortened(pipeline: Pipeline, stage: tuple[str, ...]) -> str:
    """The stage's names, a run of one family's consecutive expansions as `first..last`."""
    runs: list[list[str]] = []
    for name in stage:
        task, last = pipeline.task(name), pipeline.task(runs[-1][-1]) if runs else None
        consecutive = (
            last is not None and last.source == task.source and last.index is not None
            and task.index == last.index + 1
        )  # fmt: skip
        if consecutive:
            runs[-1].append(name)
        else:
            runs.append([name])
    return ", ".join(run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in runs)
