"""The `mstc` commands on the flow service's API: `mstc jobs ls|show|logs|retry|cancel` and
`mstc catalog ls|fire`, and what the other commands on the API are built with
(`add_api_command`, `api_runner`, `emit`, `table`: `cli_queue`, `cli_pipeline_api`).

`add_flow_commands` registers them on `mstc`'s subcommands; each sets `handler`, which
`cli.main` calls with the parsed arguments and the environment. Output follows the other
commands: a table or a few lines for people, `--json` for scripts (the API's JSON, one object),
errors on stderr as "mstc: <the server's sentence>", and an `ExitCode`: 10 for a refused
token, 8 for no such job or entry, 4 when the API does not answer, 3 when it refuses for good
(409), 5 for a bad parameter or setting. The API is found by `MSTC_FLOW_URL` (or `--url`)
and `MSTC_FLOW_TOKEN` (see `mstc_client.flow_api`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mstc_client.errors import (
    AuthError,
    ConfigError,
    FlowApiError,
    FlowNotFound,
    FlowUnreachable,
    MstcClientError,
)
from mstc_client.exit_codes import ExitCode, exit_code_for_cancel
from mstc_client.flow_api import FlowApi, FlowApiConfig

__all__ = [
    "FLOW_EPILOG",
    "Handler",
    "add_api_command",
    "add_flow_commands",
    "api_runner",
    "emit",
    "exit_code_for_flow_error",
    "table",
    "workers_from_api",
]

FLOW_EPILOG = """\
settings: MSTC_FLOW_URL (the flow service, http(s)://host:port; --url overrides it) and
MSTC_FLOW_TOKEN (its read token, or the admin token for retry, cancel, fire, purge and run)
exit codes: 0 done (cancel: the Job is being cancelled), 1 pipeline run --wait: the pipeline
failed or was cancelled, 3 refused (e.g. retry of a Job still running, a purge not confirmed),
4 the flow API does not answer or cannot serve now, 5 bad usage, setting or pipeline file,
8 no such job, catalog entry or pipeline (cancel: the worker knows no such Job), 9 cancel: the
Job had finished already, 10 the token was refused (none, unknown, or read-only for a change)
"""
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
Handler = Callable[[FlowApi, argparse.Namespace], ExitCode]


def exit_code_for_flow_error(exc: MstcClientError) -> ExitCode:
    if isinstance(exc, AuthError):
        return ExitCode.AUTH_FAILED
    if isinstance(exc, FlowNotFound):
        return ExitCode.NO_SUCH_JOB
    if isinstance(exc, FlowUnreachable):
        return ExitCode.UNREACHABLE
    if isinstance(exc, FlowApiError) and exc.status == 409:
        return ExitCode.REJECTED
    return ExitCode.ERROR


def add_flow_commands(commands: Any) -> Any:
    """Add `jobs` and `catalog` to `mstc`'s subcommands; returns `catalog`'s subcommands, to
    which other modules add theirs (e.g. `catalog validate`, which needs no API)."""
    sub = add_api_command
    jobs = sub(commands, "jobs", "the flow service's history of Jobs", None)
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    ls = sub(jobs_commands, "ls", "list Jobs, newest first", _jobs_ls)
    ls.add_argument("--state", help="accepted, running, succeeded, failed, timeout, ...")
    ls.add_argument("--name", help="requested or made Job name")
    ls.add_argument("--label", metavar="K=V", help="a label the Job carries")
    ls.add_argument("--image", help="container image")
    ls.add_argument("--since", metavar="TIME", help="ISO 8601 time, or an age: 30m, 2h, 1d")
    ls.add_argument("--until", metavar="TIME", help="ISO 8601 time, or an age: 30m, 2h, 1d")
    ls.add_argument("--limit", type=int, default=50, metavar="N", help="Jobs per page (50)")
    ls.add_argument("--all", action="store_true", help="every page, not only the first")
    ls.add_argument(
        "--flagged", action="store_true",
        help="only Jobs flagged as stalled (pending without a pod, overdue), with their flags",
    )  # fmt: skip
    for name, help_text, handler in [
        ("show", "one Job: its record, events and firing", _jobs_show),
        ("logs", "the Job's log, from the bucket", _jobs_logs),
        ("retry", "send the Job's request again (admin token)", _jobs_retry),
        ("cancel", "cancel the Job (admin token)", _jobs_cancel),
    ]:
        command = sub(jobs_commands, name, help_text, handler)
        command.add_argument("key", metavar="KEY", help="the requestId or the made Job's name")
    catalog = sub(commands, "catalog", "the flow service's catalog of triggered Jobs", None)
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    sub(catalog_commands, "ls", "the active catalog's entries and triggers", _catalog_ls)
    fire = sub(catalog_commands, "fire", "fire an entry by hand (admin token)", _catalog_fire)
    fire.add_argument("entry", metavar="ENTRY", help="the entry's name")
    fire.add_argument(
        "--payload", default="", metavar="TEXT|@FILE",
        help="the trigger's payload: text, or @FILE for a file's bytes (@- for stdin)",
    )  # fmt: skip
    return catalog_commands


def add_api_command(actions: Any, name: str, help_text: str, handler: Handler | None) -> Any:
    """A command on the flow API: `--json` and `--url`, the API's epilog, `handler` run by
    `api_runner` (None: a group whose subcommands have handlers)."""
    common = argparse.ArgumentParser(add_help=False)  # only its arguments are used
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    common.add_argument("--url", help="the flow service's base URL (MSTC_FLOW_URL)")
    parser = actions.add_parser(
        name, help=help_text, parents=[] if handler is None else [common],
        epilog=FLOW_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    if handler is not None:
        parser.set_defaults(handler=api_runner(handler))
    return parser


def api_runner(handler: Handler) -> Callable[[argparse.Namespace, Mapping[str, str]], int]:
    """`handler` run on a `FlowApi` from the environment (and `--url`); the client's errors
    become the message on stderr and the exit code (`exit_code_for_flow_error`)."""

    def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
        try:
            overlay = {"MSTC_FLOW_URL": args.url} if args.url else {}
            api = FlowApi(FlowApiConfig.from_env({**env, **overlay}))
            return int(handler(api, args))
        except MstcClientError as exc:
            code = exit_code_for_flow_error(exc)
            if args.json:
                emit(json.dumps({"status": "error", "exitCode": int(code), "error": str(exc),
                                   "errorType": type(exc).__name__}))  # fmt: skip
            emit(f"mstc: {exc}", sys.stderr)
            return int(code)

    return run


def emit(text: str, stream: Any = None) -> None:
    """One line for people or scripts: stdout unless `stream`, flushed at once."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _when(text: str | None) -> str | None:
    """An age ("2h") as the ISO time that long ago; anything else as given (the API checks)."""
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match is None:
        return text
    age = timedelta(**{_UNITS[match[2]]: int(match[1])})
    return (datetime.now(UTC) - age).isoformat(timespec="seconds")


def _jobs_ls(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1; got {args.limit}.")
    filters: dict[str, str | int | None] = {
        "state": args.state, "name": args.name, "label": args.label, "image": args.image,
        "since": _when(args.since), "until": _when(args.until),
        "limit": args.limit, "flagged": "true" if args.flagged else None,
    }  # fmt: skip
    page = api.list_jobs(filters)
    items = list(page["items"])
    while args.all and page.get("nextCursor"):
        page = api.list_jobs({**filters, "cursor": page["nextCursor"]})
        items.extend(page["items"])
    more = page.get("nextCursor")
    if args.json:
        emit(json.dumps({"items": items, "nextCursor": more}))
        return ExitCode.SUCCEEDED
    header: tuple[str, ...] = ("JOB", "STATE", "EXIT", "IMAGE", "ACCEPTED", "REQUEST")
    rows = [_job_row(job) for job in items]
    if args.flagged:  # the flags' kinds as a last column, only where they were asked for
        header += ("FLAGS",)
        rows = [(*row, _flag_kinds(job)) for row, job in zip(rows, items, strict=True)]
    emit(table(header, rows))
    if more:
        emit(f"mstc: more Jobs than --limit {args.limit}: use --all to list them all.",
               sys.stderr)  # fmt: skip
    return ExitCode.SUCCEEDED


def _job_row(job: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        str(job.get("jobName") or job.get("requestedName") or "-"),
        str(job.get("state") or "-"),
        _text(job.get("exitCode")),
        str(job.get("image") or "-"),
        str(job.get("acceptedAt") or "-"),
        str(job.get("requestId") or "-")[:12],
    )


def _flag_kinds(job: Mapping[str, Any]) -> str:
    kinds = [str(flag.get("kind")) for flag in job.get("flags") or [] if isinstance(flag, dict)]
    return ",".join(kinds) or "-"


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, the header first."""
    lines = [tuple(header), *rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


_SHOWN = ("requestId", "requestedName", "jobName", "namespace", "image", "state", "exitCode",
          "reason", "message", "error", "acceptedAt", "runningAt", "finishedAt", "durationMs",
          "podsSucceeded", "podsFailed", "logBucket", "logObject", "outputBucket",
          "correlationId", "replica", "labels", "firing")  # fmt: skip


def _jobs_show(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    job = api.job(args.key)
    events = api.job_events(str(job["requestId"]))
    if args.json:
        emit(json.dumps({**job, "events": events}))
        return ExitCode.SUCCEEDED
    shown = [(name, job[name]) for name in _SHOWN if job.get(name) not in (None, {}, "")]
    width = max(len(name) for name, _ in shown)
    lines = [f"{name.ljust(width)}  {_value(value)}" for name, value in shown]
    lines.append("events")
    lines += [f"  {event.get('at', '-')}  {event.get('event', '-')}" for event in events]
    emit("\n".join(lines))
    return ExitCode.SUCCEEDED


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def _jobs_logs(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    log = api.job_log(args.key)  # bytes as stored: a log need not be UTF-8
    sys.stdout.flush()
    sys.stdout.buffer.write(log)
    sys.stdout.buffer.flush()
    return ExitCode.SUCCEEDED


def _jobs_retry(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    answer = api.retry(args.key)
    text = f"retry of {answer.get('retryOf')} fired as firing {answer.get('firingId')}"
    emit(json.dumps(answer) if args.json else text)
    return ExitCode.SUCCEEDED


def _jobs_cancel(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    answer = api.cancel(args.key)
    emit(json.dumps(answer) if args.json else str(answer.get("message", answer)))
    return exit_code_for_cancel(str(answer.get("status")))


def _catalog_ls(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    catalog = api.catalog()
    if args.json:
        emit(json.dumps(catalog))
        return ExitCode.SUCCEEDED
    digest = str(catalog.get("digest") or "")[:12] or "-"
    lines = [f"catalog {catalog.get('source') or '-'} (sha256 {digest}), "
             f"loaded {catalog.get('loadedAt') or '-'}"]  # fmt: skip
    if catalog.get("error"):
        lines.append(f"last reload refused: {catalog['error']}")
    rows = [_entry_row(entry) for entry in catalog.get("entries") or []]
    lines.append(table(("ENTRY", "TRIGGER", "CONCURRENCY", "MAX IN FLIGHT"), rows))
    emit("\n".join(lines))
    return ExitCode.SUCCEEDED


def _entry_row(entry: Mapping[str, Any]) -> tuple[str, ...]:
    trigger = entry.get("trigger")
    if isinstance(trigger, Mapping):  # {"topic", "bindingKey"}: the topic as written
        trigger = trigger.get("topic")
    limit = entry.get("maxInFlight")
    return (
        str(entry.get("name") or "-"),
        str(trigger or "(by hand)"),
        str(entry.get("concurrency") or "-"),
        "unlimited" if not limit else str(limit),
    )


def _catalog_fire(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    answer = api.fire(args.entry, _payload(args.payload))
    emit(json.dumps(answer) if args.json else
           f"{args.entry} fired: firing {answer.get('firingId')}")  # fmt: skip
    return ExitCode.SUCCEEDED


def _payload(text: str) -> bytes:
    if not text.startswith("@"):
        return text.encode()
    if text == "@-":
        return sys.stdin.buffer.read()
    try:
        return Path(text[1:]).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--payload {text}: cannot read the file: {exc.strerror}.") from exc


def workers_from_api(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`mstc workers` when a flow service is configured: every replica it heard, with the age
    of its last heartbeat (stopped replicas too, until the history's retention drops them)."""
    return int(api_runner(_workers)(args, env))


def _workers(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    replicas = api.replicas()
    if args.json:
        for replica in replicas:
            emit(json.dumps(replica))
        return ExitCode.SUCCEEDED
    now = datetime.now(UTC)
    rows = [_replica_row(replica, now) for replica in replicas]
    emit(table(("REPLICA", "VERSION", "IN FLIGHT", "CAPACITY", "LAST HEARD", "STATE"), rows))
    return ExitCode.SUCCEEDED


def _replica_row(replica: Mapping[str, Any], now: datetime) -> tuple[str, ...]:
    seen = replica.get("lastSeen")
    age = "-"
    if seen:
        age = f"{max(0.0, (now - datetime.fromisoformat(seen)).total_seconds()):.0f} s ago"
    state = "stopping" if replica.get("stopping") else "running"
    return (_text(replica.get("replica")), _text(replica.get("version")),
            _text(replica.get("inFlight")), _text(replica.get("capacity")), age, state)  # fmt: skip
