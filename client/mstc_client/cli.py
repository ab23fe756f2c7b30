"""The `mstc` command: `mstc run` (files in, results out), `mstc send` (a raw request),
`mstc cancel` (stop a Job), the listeners `mstc events --follow` (job events as they
happen) and `mstc workers` (the replicas), and, on the flow service's API, `mstc jobs ...`,
`mstc catalog ...`, `mstc pipeline ...` and `mstc queue ...` (registered from
`mstc_client.cli_flow`, `cli_pipeline_api` and `cli_queue`, which run them themselves).

The command is a thin shell over `Client`: it parses flags, overlays them on the environment
(the worker's variable names, so one env file serves both), shows progress, prints a summary
or one JSON object, and turns the outcome into an exit code a script can branch on
(`ExitCode`, listed in `mstc --help`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from mstc_client.cli_catalog import add_catalog_commands
from mstc_client.cli_flow import add_flow_commands, workers_from_api
from mstc_client.cli_pipeline import add_pipeline_commands
from mstc_client.cli_pipeline_api import add_pipeline_api_commands
from mstc_client.cli_queue import add_queue_commands
from mstc_client.client import Client
from mstc_client.config import ClientConfig
from mstc_client.display import Display, summary
from mstc_client.errors import (
    BrokerUnreachable,
    ConfigError,
    JobFailed,
    JobTimedOut,
    MstcClientError,
    RequestRejected,
    StorageError,
    WaitTimeout,
)
from mstc_client.exit_codes import ExitCode, exit_code_for_cancel
from mstc_client.handle import JobHandle
from mstc_client.listen import follow_events, list_workers
from mstc_client.protocol import Resources, Status
from mstc_client.result import error_for
from mstc_client.run_request import RunRequest, timeout_minutes_of, wait_budget

__all__ = [
    "ExitCode",
    "exit_code_for_cancel",
    "exit_code_for_error",
    "exit_code_for_status",
    "main",
]


EPILOG = """\
exit codes:
  0  the Job succeeded (or, with --no-wait, the request was handed to the broker;
     mstc workers: a replica was heard; mstc events: stopped with Ctrl-C)
  1  the Job failed (non-zero exit code, image pull error, ...): read its log
  2  timeout: the Job ran past --timeout, or no reply came within --wait-timeout
     (mstc workers: no replica's heartbeat within --wait)
  3  the worker rejected the request (bad field, image not allowed): fix it and resend
  4  RabbitMQ or MinIO unreachable or refusing the login: check the settings below
  5  any other error, including bad usage and unusable local paths
  6  a Java-era worker replied "Job X complete." without the outcome: read the log
  7  the Job was cancelled (mstc cancel, Client.cancel)
  8  mstc cancel: no such Job
  9  mstc cancel: the Job had finished already (the answer says how)
  (mstc cancel: 0 the Job is being cancelled; 3 the name is ambiguous or the message bad)
  10 mstc jobs|catalog|pipeline|queue: the flow API refused the token (MSTC_FLOW_TOKEN);
     these commands also use 8 for no such job, entry or pipeline, 4 when the API does not
     answer, 3 when it refuses (or a purge was not confirmed), 5 for a refused pipeline file;
     mstc pipeline run --wait: 0 the pipeline succeeded, 1 it failed or was cancelled

settings (environment, the worker's own names; flags override them):
  MSTC_AMQP_URL or WORK_QUEUE_HOST, WORK_QUEUE_PORT, WORK_QUEUE_USER, WORK_QUEUE_PASS
  MSTC_S3_ENDPOINT or MINIO_SERVICE_HOST, MINIO_SERVICE_PORT; any MinIO user's key that may use
  the buckets: MSTC_S3_ACCESS_KEY, MSTC_S3_SECRET_KEY (or MINIO_ROOT_USER, MINIO_ROOT_PASSWORD)
  MSTC_EXCHANGE (mstc.exchange), MSTC_WORK_QUEUE (mstc.queue.work), MSTC_BUCKET (mstc),
  MSTC_CONTROL_QUEUE (mstc.queue.control),
  MSTC_CONNECT_TIMEOUT_SECONDS (15), MSTC_HEARTBEAT_SECONDS (30)
  MSTC_EVENTS_EXCHANGE (amq.topic; empty: events off), for mstc events and mstc workers
  MSTC_FLOW_URL, MSTC_FLOW_TOKEN: the flow service's API and token, for mstc
  jobs|catalog|pipeline|queue
"""

_STATUS_CODES = {
    Status.SUCCEEDED: ExitCode.SUCCEEDED,
    Status.FAILED: ExitCode.JOB_FAILED,
    Status.TIMEOUT: ExitCode.TIMEOUT,
    Status.REJECTED: ExitCode.REJECTED,
    Status.ERROR: ExitCode.ERROR,
    Status.CANCELLED: ExitCode.CANCELLED,
    Status.UNKNOWN: ExitCode.UNKNOWN,
}


def exit_code_for_status(status: Status) -> ExitCode:
    return _STATUS_CODES[status]


def exit_code_for_error(exc: BaseException) -> ExitCode:
    """The exit code for an error raised on the way (not a reply)."""
    if isinstance(exc, JobTimedOut | WaitTimeout):
        return ExitCode.TIMEOUT
    if isinstance(exc, RequestRejected):
        return ExitCode.REJECTED
    if isinstance(exc, JobFailed):
        return exit_code_for_status(exc.reply.status)
    if isinstance(exc, BrokerUnreachable | StorageError):
        return ExitCode.UNREACHABLE
    return ExitCode.ERROR


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would exit with 2, which here means "timeout".
        self.print_usage(sys.stderr)
        self.exit(ExitCode.ERROR, f"{self.prog}: error: {message}\n")


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mstc",
        description="Run container jobs on your files through an mstc worker.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _Parser(add_help=False)
    common.add_argument("--no-wait", action="store_true", help="return once the broker has it")
    common.add_argument("--json", action="store_true", help="print one JSON object, no progress")
    common.add_argument(
        "--wait-timeout",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the reply (default: timeout + 5 min)",
    )
    common.add_argument("--amqp-url", help="broker URL (MSTC_AMQP_URL)")
    common.add_argument("--s3-endpoint", help="http(s)://host:port of MinIO (MSTC_S3_ENDPOINT)")
    common.add_argument("--work-queue", help="work queue (MSTC_WORK_QUEUE)")
    common.add_argument("--exchange", help="exchange (MSTC_EXCHANGE)")
    common.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="give up connecting after this long (MSTC_CONNECT_TIMEOUT_SECONDS)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="upload inputs, run a Job, download outputs and log",
    )
    run.add_argument("--image", required=True, help="container image")
    run.add_argument("--job-name", required=True, help="base name of the Job")
    run.add_argument(
        "--input",
        action="extend",
        nargs="+",
        default=[],
        metavar="PATH",
        help="file or directory (its contents) to upload; repeatable",
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where outputs and the log go (required unless --no-wait)",
    )
    run.add_argument("--timeout", type=int, metavar="MIN", help="Job timeout in minutes")
    run.add_argument("--bucket", help="bucket for inputs and outputs (MSTC_BUCKET)")
    run.add_argument("--output-bucket", help="bucket for outputs (default: --bucket)")
    run.add_argument("--prefix", help="object-name prefix (default: run-<random>)")
    run.add_argument(
        "--env",
        action="append",
        type=_pair,
        default=[],
        metavar="K=V",
        help="environment variable for the container; repeatable",
    )
    run.add_argument(
        "--annotation",
        action="append",
        type=_pair,
        default=[],
        metavar="K=V",
        help="pod annotation; repeatable",
    )
    run.add_argument(
        "--label",
        action="append",
        type=_pair,
        default=[],
        metavar="K=V",
        help="Job label; repeatable",
    )
    run.add_argument(
        "--resource",
        action="append",
        type=_pair,
        default=[],
        metavar="S.N=Q",
        help="e.g. limits.cpu=2 or requests.memory=1Gi; repeatable",
    )
    run.add_argument("--completions", type=int, metavar="N", help="pods that must succeed")
    run.add_argument("--parallelism", type=int, metavar="N", help="pods running at once")
    run.add_argument(
        "--indexed", action="store_true", help="give each pod its index (JOB_COMPLETION_INDEX)"
    )

    send = commands.add_parser(
        "send",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="send a raw JSON request and print the reply",
    )
    send.add_argument("file", metavar="FILE.json", help="the request body ('-' for stdin)")

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="cancel a Job: its request is answered 'cancelled'",
    )
    cancel.add_argument(
        "name", metavar="NAME", help="the Job's name, or the jobName it was sent with"
    )
    cancel.add_argument("--reason", help="why; the cancelled reply's message says it")
    cancel.add_argument("--control-queue", help="control queue (MSTC_CONTROL_QUEUE)")
    _add_listeners(commands)
    # mstc jobs ..., mstc catalog ...: the flow service\'s API, and the offline validate
    add_catalog_commands(add_flow_commands(commands))
    # mstc pipeline validate (offline), then run|status|retry|cancel|ls on the flow API
    add_pipeline_api_commands(add_pipeline_commands(commands))
    add_queue_commands(commands)
    return parser  # fmt: skip


def _add_listeners(commands: Any) -> None:
    listening = _Parser(add_help=False)
    listening.add_argument("--json", action="store_true", help="print JSON, one object a line")
    listening.add_argument("--amqp-url", help="broker URL (MSTC_AMQP_URL)")
    listening.add_argument("--events-exchange", help="exchange (MSTC_EVENTS_EXCHANGE)")
    listening.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="give up connecting after this long (MSTC_CONNECT_TIMEOUT_SECONDS)",
    )
    events = commands.add_parser(
        "events", parents=[listening], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="print job events as they happen (--follow), until Ctrl-C",
    )  # fmt: skip
    events.add_argument("--follow", action="store_true", help="print events as they happen")
    events.add_argument("--job", metavar="NAME", help="only the Job requested as NAME")
    events.add_argument("--final", action="store_true", help="only final events")
    workers = commands.add_parser(
        "workers", parents=[listening], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list the worker replicas heard from (their heartbeats)",
    )  # fmt: skip
    workers.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="listen this long (default: one heartbeat interval and a margin, about 7 s)",
    )
    workers.add_argument("--url", help="ask this flow service instead of listening (MSTC_FLOW_URL)")
    workers.add_argument(
        "--live", action="store_true", help="listen to heartbeats even when MSTC_FLOW_URL is set"
    )


def _config(args: argparse.Namespace, env: Mapping[str, str]) -> ClientConfig:
    overlay = {
        "MSTC_AMQP_URL": args.amqp_url,
        "MSTC_S3_ENDPOINT": getattr(args, "s3_endpoint", None),
        "MSTC_WORK_QUEUE": getattr(args, "work_queue", None),
        "MSTC_EXCHANGE": getattr(args, "exchange", None),
        "MSTC_EVENTS_EXCHANGE": getattr(args, "events_exchange", None),
        "MSTC_BUCKET": getattr(args, "bucket", None),
        "MSTC_CONTROL_QUEUE": getattr(args, "control_queue", None),
        "MSTC_CONNECT_TIMEOUT_SECONDS": (
            None if args.connect_timeout is None else str(args.connect_timeout)
        ),
    }
    return ClientConfig.from_env({**env, **{k: v for k, v in overlay.items() if v is not None}})


def _resources(pairs: Sequence[tuple[str, str]]) -> Resources | None:
    sections: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    for key, value in pairs:
        section, _, name = key.partition(".")
        if section not in sections or not name:
            raise ConfigError(f"--resource {key}={value}: write requests.NAME=Q or limits.NAME=Q.")
        sections[section][name] = value
    return Resources(**sections) if pairs else None


def _say(text: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    _say(json.dumps(data) if args.json else text)


def _run_request(args: argparse.Namespace) -> RunRequest:
    return RunRequest(
        image=args.image, job_name=args.job_name, inputs=args.input, output_dir=args.output_dir,
        timeout=args.timeout, bucket=args.bucket, output_bucket=args.output_bucket,
        prefix=args.prefix, env=dict(args.env), annotations=dict(args.annotation),
        labels=dict(args.label), resources=_resources(args.resource),
        wait_timeout=args.wait_timeout, completions=args.completions,
        parallelism=args.parallelism, indexed=args.indexed,
    )  # fmt: skip


def _run(client: Client, args: argparse.Namespace, display: Display) -> ExitCode:
    run = _run_request(args)
    if args.no_wait:
        staged = client.upload_inputs(run.inputs, bucket=run.bucket, prefix=run.prefix,
                                      progress=display)  # fmt: skip
        # The output bucket goes only if given: the worker's default is the input bucket.
        request = run.job_request(staged.bucket, run.output_bucket, staged.prefix)
        where = {"bucket": run.output_bucket or staged.bucket, "prefix": staged.prefix}
        return _sent(client, client.submit(request), args, display, where)
    if run.output_dir is None:
        raise ConfigError("mstc run needs --output-dir DIR (or --no-wait).")
    result = client.run(run, progress=display)
    display.close_line()
    _emit(args, result.to_dict(), summary(result))
    _explain(args, error_for(result.reply), result.status)
    return exit_code_for_status(result.status)


def _send(client: Client, args: argparse.Namespace, display: Display) -> ExitCode:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        body = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Cannot read the request {args.file!r}: {exc}.") from exc
    if not isinstance(body, dict):
        raise ConfigError(f"The request {args.file!r} must hold a JSON object.")
    handle = client.submit(body)
    if args.no_wait:
        return _sent(client, handle, args, display, {})
    timeout = args.wait_timeout or wait_budget(timeout_minutes_of(body.get("timeOut")))
    reply = client.wait(handle, timeout, display)
    display.close_line()
    data = reply.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = f"{reply.job_name or 'the request'}: {reply.status.value}\n  result   {reply.result}"
    _emit(args, {"correlationId": handle.correlation_id, **data}, text)
    _explain(args, error_for(reply), reply.status)
    return exit_code_for_status(reply.status)


def _cancel(client: Client, args: argparse.Namespace, _display: Display) -> ExitCode:
    answer = client.cancel(args.name, timeout=args.wait_timeout or 30.0, reason=args.reason)
    _emit(args, answer.to_dict(), answer.message)
    return exit_code_for_cancel(answer.status)


def _explain(args: argparse.Namespace, error: MstcClientError | None, status: Status) -> None:
    if args.json:
        return
    if error is not None:
        _say(f"mstc: {error}", sys.stderr)
    elif status is Status.UNKNOWN:
        _say("mstc: the worker did not say how the Job ended (a Java-era worker); read its log.",
             sys.stderr)  # fmt: skip


def _sent(
    client: Client, handle: JobHandle, args: argparse.Namespace, display: Display,
    where: dict[str, str],
) -> ExitCode:  # fmt: skip
    if not handle.wait_sent(client.config.connect_timeout_seconds + 30):
        raise BrokerUnreachable(
            f"The broker did not confirm request {handle.correlation_id} "
            f"({client.broker_state}); it may not have been sent. Check the broker and resend."
        )
    display.close_line()
    place = f"{where['bucket']}/{where['prefix']}" if where else "the request's output bucket"
    # This process ends now, and its reply queue with it: the reply goes to the worker's
    # results queue; the outputs and the log still land in the bucket.
    _emit(
        args,
        {"status": "sent", "correlationId": handle.correlation_id, **where},
        f"request {handle.correlation_id} sent; outputs and the log will appear under {place}",
    )
    return ExitCode.SUCCEEDED


def _listen(config: ClientConfig, args: argparse.Namespace) -> ExitCode:
    if args.command == "workers":
        list_workers(config, sys.stdout, wait=args.wait, as_json=args.json)
        return ExitCode.SUCCEEDED
    if not args.follow:
        raise ConfigError(
            "events keeps no history (the flow service does: mstc jobs show KEY): "
            "use --follow to print events as they happen."
        )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how following ends
        follow_events(config, sys.stdout, job=args.job, final=args.final, as_json=args.json)
    return ExitCode.SUCCEEDED


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "handler"):  # a command that brings its own runner (cli_flow)
        return int(args.handler(args, os.environ if env is None else env))
    if args.command == "workers" and not args.live:
        values = os.environ if env is None else env
        if args.url or values.get("MSTC_FLOW_URL"):  # the flow service remembers the replicas
            return workers_from_api(args, values)
    display = Display(sys.stderr, enabled=not args.json)
    try:
        config = _config(args, os.environ if env is None else env)
        if args.command in ("events", "workers"):
            return int(_listen(config, args))
        with Client(config) as client:
            command = {"run": _run, "send": _send, "cancel": _cancel}[args.command]
            return int(command(client, args, display))
    except MstcClientError as exc:
        display.close_line()
        code = exit_code_for_error(exc)
        if args.json:
            _emit(args, {"status": "error", "exitCode": int(code), "error": str(exc),
                         "errorType": type(exc).__name__}, "")  # fmt: skip
        _say(f"mstc: {exc}", sys.stderr)
        return int(code)
    except KeyboardInterrupt:
        display.close_line()
        _say("mstc: interrupted; a request already sent still runs.", sys.stderr)
        return 130
