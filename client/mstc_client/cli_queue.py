"""`mstc queue status` and `mstc queue purge`: the worker's work queue, through the flow API.

`status` shows how many requests wait in the work queue for a worker, its consumers, what the
worker replicas hold (their heartbeats), and the flow's own waiting work (pending firings,
pipeline tasks waiting and queued). `purge` drops the requests no worker has taken yet (never
one a worker holds: that one has or is getting its Job) and says what it dropped: firings
and pipeline tasks the flow marks purged/failed, and other clients' requests, which get a
failure reply. It asks "Purge N waiting requests? [y/N]" on a terminal; `--yes` skips the
question, and without a terminal `--yes` is required (exit 5), so a script cannot purge by
accident. Declined: exit 3, nothing purged. Tokens: read for status, admin for purge.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from mstc_client.cli_flow import add_api_command, emit
from mstc_client.errors import ConfigError
from mstc_client.exit_codes import ExitCode
from mstc_client.flow_api import FlowApi

__all__ = ["add_queue_commands"]


def add_queue_commands(commands: Any) -> None:
    """Add `mstc queue status|purge` to `mstc`'s subcommands."""
    group = add_api_command(commands, "queue", "the worker's work queue (flow API)", None)
    queue_commands = group.add_subparsers(dest="queue_command", required=True)
    add_api_command(queue_commands, "status", "requests waiting for a worker, and the flow's",
                    _status)  # fmt: skip
    purge = add_api_command(
        queue_commands, "purge",
        "drop the requests no worker has taken yet; asks first (admin token)", _purge,
    )  # fmt: skip
    purge.add_argument("--yes", action="store_true", help="do not ask (needed without a tty)")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _status(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    status = api.queue_status()
    if args.json:
        emit(json.dumps(status))
        return ExitCode.SUCCEEDED
    emit(_status_text(status))
    return ExitCode.SUCCEEDED


def _status_text(status: Mapping[str, Any]) -> str:
    lines = [
        f"work queue {status.get('workQueue')}: {status.get('ready')} waiting for a worker, "
        f"{_plural(int(status.get('consumers') or 0), 'consumer')}; the workers hold "
        f"{status.get('workersInFlight')} (their heartbeats)",
        f"flow: {_plural(int(status.get('pendingFirings') or 0), 'firing')} pending",
    ]
    tasks = status.get("pipelineTasks")
    if isinstance(tasks, Mapping):
        lines[-1] += (f"; pipeline tasks: {tasks.get('waiting', 0)} waiting, "
                      f"{tasks.get('queued', 0)} queued")  # fmt: skip
    return "\n".join(lines)


def _purge(api: FlowApi, args: argparse.Namespace) -> ExitCode:
    waiting = int(api.queue_status().get("ready") or 0)
    if not args.yes:
        if waiting == 0:
            emit("Nothing waits in the work queue: nothing to purge.")
            return ExitCode.SUCCEEDED
        if not sys.stdin.isatty():
            raise ConfigError(
                "mstc queue purge asks before it drops requests, and stdin is not a terminal: "
                "give --yes to purge without asking."
            )
        sys.stderr.write(f"Purge {_plural(waiting, 'waiting request')}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            emit("Not purged.", sys.stderr)
            return ExitCode.REJECTED
    answer = api.purge_queue()
    emit(json.dumps(answer) if args.json else _purge_text(answer))
    return ExitCode.SUCCEEDED


def _purge_text(answer: Mapping[str, Any]) -> str:
    firings, tasks = answer.get("firings") or [], answer.get("pipelineTasks") or []
    others, replied = int(answer.get("others") or 0), int(answer.get("replied") or 0)
    lines = [
        f"Purged {_plural(int(answer.get('purged') or 0), 'request')} from the work queue: "
        f"{_plural(len(firings), 'firing')}, {_plural(len(tasks), 'pipeline task')}, "
        f"{others} other (failure reply sent to {replied})"
    ]
    lines += [f"  firing {firing}: purged" for firing in firings]
    lines += [f"  pipeline {task.get('pipelineId')} task {task.get('task')}: failed"
              for task in tasks]  # fmt: skip
    kept = int(answer.get("kept") or 0)
    if kept:
        lines.append(f"Kept {_plural(kept, 'request')} a worker had taken before "
                     "(its Job may exist).")  # fmt: skip
    return "\n".join(lines)
