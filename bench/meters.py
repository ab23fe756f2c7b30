"""What the bench reads off the machine and the API server while a scenario runs.

Owns the meters every scenario shares: resident memory and CPU seconds of a process tree
(from /proc), each part of the stack's CPU (its pid files), and the API server's own
metrics (watches held open, requests answered by verb and resource), and the percentile
every scenario's row is given in.
"""

from __future__ import annotations

import os
import re
from contextlib import suppress
from pathlib import Path

from tests.support.stack import StackInfo
from tests.support.worker import WorkerProcess


def pct(values: list[float], q: float) -> float:
    """The `q`th percentile of `values` (nearest rank: always a value measured)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def tree_rss_mb(proc: WorkerProcess) -> float:
    """Resident memory of the worker and every process under it, in MB."""
    assert proc.proc is not None
    total = 0
    for pid in _tree(proc.proc.pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
        )
    return total / 1024


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    todo, out = [pid], []
    while todo:
        current = todo.pop()
        out.append(current)
        with suppress(OSError):
            todo += [
                int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()
            ]
    return out


def cpu_seconds(stack: StackInfo, workers: list[WorkerProcess]) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack (and each worker replica's processes)."""
    used: dict[str, float] = {}
    pids = stack.state_dir / "pids" if stack.state_dir else None
    parts = {p.stem: int(p.read_text()) for p in pids.glob("*.pid")} if pids else {}
    for index, worker in enumerate(workers):
        if worker.proc is not None:
            parts["mstc-worker" + (f"-{index + 1}" if len(workers) > 1 else "")] = worker.proc.pid
    for name, pid in parts.items():
        total = 0.0
        for member in _tree(pid):
            try:
                total += _process_cpu(member)
            except OSError:
                continue
        used[name] = total
    return used


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {
        k: round(v - before.get(k, 0.0), 1)
        for k, v in sorted(after.items(), key=lambda kv: -kv[1] + before.get(kv[0], 0.0))
    }


def watch_connections(stack: StackInfo) -> float:
    """Namespaced WATCH requests on jobs and pods the API server holds open right now."""
    text = stack.run(stack.env["KUBECTL_BIN"], "get", "--raw", "/metrics").stdout
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line
        and 'scope="namespace"' in line and ('resource="jobs"' in line or 'resource="pods"' in line)
    )  # fmt: skip


def api_requests(stack: StackInfo) -> dict[str, float]:
    """Requests the API server has answered so far on jobs, pods and pod logs, by verb."""
    text = stack.run(stack.env["KUBECTL_BIN"], "get", "--raw", "/metrics").stdout
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        resource = labels.get("resource", "") + (f"/{labels['subresource']}"
                                                 if labels.get("subresource") else "")  # fmt: skip
        if resource not in ("jobs", "pods", "pods/log", "jobs/status", "pods/status"):
            continue
        key = f"{labels.get('verb')} {resource}"
        counts[key] = counts.get(key, 0.0) + float(line.split()[-1])
    return counts


def per_job(after: dict[str, float], before: dict[str, float], jobs: int) -> dict[str, float]:
    """API requests per Job during one run, largest first (controllers' own included)."""
    rates = {k: round((v - before.get(k, 0.0)) / jobs, 2) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in rates.items() if v >= 0.01), key=lambda kv: -kv[1]))
