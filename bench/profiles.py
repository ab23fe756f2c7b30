"""Where the CPU of a throughput run goes: py-spy on the worker, pprof on the API server.

Owns profiling one run of the bench. py-spy samples every process of the worker replicas
(the service and its worker processes) without touching them; the API server profiles
itself through its own `/debug/pprof/profile` endpoint (on when the stack was started with
MSTC_STACK_PROFILING=1, as `make bench` does; read with the stack's admin kubeconfig) for the same window. The raw profiles are kept in bench/results/profiles/
(py-spy's folded stacks, gzipped, and pprof's protobuf) and their summaries join the bench row: the share
of samples per worker process, the functions that burn the most on their own (leaf), the
project's own functions counting what they call, and pprof's `-top` of the API server.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.stack import StackInfo
from tests.support.worker import WorkerProcess

SECONDS = 30  # long enough for thousands of samples, shorter than a 1,000-Job run
RATE = 100  # samples per second and process (py-spy's default)
TOP = 12


class Profiling:
    """The profilers of one run, started together; `finish()` waits and summarises."""

    def __init__(self, stack: StackInfo, workers: list[WorkerProcess], out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.folded, self.pprof = out / "worker.folded", out / "kube-apiserver.pprof"
        self._spies = [
            _spy(w.proc.pid, Path(f"{self.folded}.{i}"))
            for i, w in enumerate(workers)
            if w.proc is not None
        ]
        self._stack = stack
        self._api = threading.Thread(target=self._profile_api_server, daemon=True)
        self._api.start()

    def _profile_api_server(self) -> None:
        answer = subprocess.run(
            [self._stack.env["KUBECTL_BIN"], "--kubeconfig", str(self._stack.kubeconfig),
             "get", "--raw", f"/debug/pprof/profile?seconds={SECONDS}"],
            capture_output=True, check=False, timeout=SECONDS + 60,
        )  # fmt: skip
        if answer.returncode == 0:
            self.pprof.write_bytes(answer.stdout)

    def finish(self) -> dict[str, Any]:
        for spy in self._spies:
            spy.wait(timeout=SECONDS + 60)
        self._api.join(timeout=SECONDS + 60)
        parts = sorted(self.folded.parent.glob(f"{self.folded.name}.*[0-9]"))
        folded = "".join(p.read_text() for p in parts)
        # Compressed: a run's stacks are a megabyte of text, a tenth of that gzipped.
        with gzip.open(f"{self.folded}.gz", "wt") as out:
            out.write(folded)
        for part in parts:
            part.unlink()
        return {"seconds": SECONDS, "worker": summarise_folded(folded),
                "kube_apiserver_top": pprof_top(self.pprof)}  # fmt: skip


def _spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling process `pid` and its children, without pausing them.

    Only the thread holding the GIL is sampled (`--gil`): the Python code that burns CPU,
    not the many threads waiting on sockets, which would otherwise fill the profile.
    """
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--pid", str(pid), "--subprocesses", "--rate", str(RATE),
               "--duration", str(SECONDS), "--format", "raw", "--nonblocking", "--gil",
               "--output", str(output)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start(stack: StackInfo, workers: list[WorkerProcess], out: Path) -> Profiling:
    return Profiling(stack, workers, out)


def summarise_folded(text: str) -> dict[str, Any]:
    """Shares (%) of py-spy samples: by process, by leaf function, by project function."""
    by_process: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    by_own: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        processes = [f for f in frames if f.startswith("process ")]
        by_process[_process_name(processes[-1]) if processes else "?"] += count
        code = [f for f in frames if not f.startswith("process ")]
        if code:
            by_leaf[_function(code[-1])] += count
        for own in {_function(f) for f in code if "mstc_worker/" in f or "mstc_worker\\" in f}:
            by_own[own] += count

    def shares(counter: Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common(TOP)} if total else {}

    return {"samples": total, "by_process_pct": shares(by_process),
            "leaf_pct": shares(by_leaf), "project_inclusive_pct": shares(by_own)}  # fmt: skip


def _process_name(frame: str) -> str:
    """`process 12:"python -m mstc_worker"` -> the service; a spawned child -> worker process."""
    return "worker process" if "spawn_main" in frame else "service (main process)"


def _function(frame: str) -> str:
    """`name (path/module.py:12)` -> `name (module.py)`: lines apart would split one function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})" if where else name


def pprof_top(profile: Path) -> dict[str, list[str]] | str:
    """`go tool pprof -top` of the API server's CPU profile: the functions that burn the most
    themselves (`flat`, where the Go runtime and JSON show) and counting what they call
    (`cumulative`, where the request handlers show)."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists()
                                else None)  # fmt: skip
    if not profile.exists():
        return "the API server gave no profile (start the stack with MSTC_STACK_PROFILING=1)"
    if go is None:
        return f"no Go toolchain to read {profile.name}; `go tool pprof -top` it elsewhere"
    return {"flat": _top(go, profile), "cumulative": _top(go, profile, "-cum")}


def _top(go: str, profile: Path, *order: str) -> list[str]:
    answer = subprocess.run([go, "tool", "pprof", "-top", *order, f"-nodecount={TOP}",
                             str(profile)],
                            capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    lines = [" ".join(line.split()) for line in answer.stdout.splitlines() if line.strip()]
    header = next((i for i, line in enumerate(lines) if line.startswith("flat")), None)
    if header is None:
        return [answer.stderr.strip()[-300:] or "pprof printed nothing"]
    return lines[header + 1 :]
