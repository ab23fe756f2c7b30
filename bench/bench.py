"""`make bench`: the worker against the bare minimum, through the real stack, in one run.

Owns the benchmark scenarios of the project (not part of `make test`: numbers are recorded,
never asserted). Each scenario runs KWOK Jobs through the real broker, worker, MinIO and API
server, and the same Jobs through a bare loop (the kubernetes client creating the Job and
watching it to Complete), on the same stack in the same run:

1. overhead: N jobs that end at once, one at a time, publish-to-reply vs create-to-Complete;
2. throughput: N jobs submitted together, completions per second, both ways;
3. capacity: N jobs in flight that each last S seconds: peak resident memory of the worker's
   processes, watch connections held on the API server, reply delay after the jobs end;
   capacity_10k the same at 10,000 (bench/scale_bench.py);
4. the Java model: the worker limited to one job in flight vs its default, N jobs of S seconds;
   scale_out: 1,000 jobs at once through one, two and three replicas (bench/scale_bench.py).

Every run through the worker reports its reply delays: from the moment the bench's own watch
saw the Job end to the reply's arrival (bench/ends.py). Throughput is the median of three runs
each way, and one more run is profiled (py-spy and the API server's pprof, bench/profiles.py).
5. history: the flow service's list_jobs on N recorded jobs, SQLite and PostgreSQL
   (bench/history_bench.py).
6. pipeline: 1,000-task pipelines (shallow and deep) through mstc-flow against the same
   requests sent straight to the worker (bench/pipeline_bench.py).
7. dashboard: the dashboard's jobs list over HTTP on N recorded jobs, SQLite and PostgreSQL
   (bench/dashboard_bench.py).

Results go to bench/results/results.json, a Markdown table on stdout and results.md, and
results.png and reply_delays.png (when matplotlib is installed), the reply delays themselves
to reply_delays.json and the profiles to profiles/. Sizes shrink with BENCH_SCALE (e.g. 0.1).
"""

from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from minio import Minio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stack"))
import localstack
from bench import dashboard_bench, history_bench, levers, pipeline_bench, profiles, scale_bench
from bench.bare import BareLoop
from bench.ends import JobEnds, after_last_ready, reply_delays
from bench.meters import (
    api_requests,
    cpu_seconds,
    diff,
    pct,
    per_job,
    tree_rss_mb,
    watch_connections,
)
from bench.namespaces import Namespaces
from bench.timed_client import TimedClient, parse_time
from tests.support.stack import StackInfo
from tests.support.worker import WorkerProcess

OUT = Path(__file__).parent / "results"
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
JOB_TTL_SECONDS = 5  # finished Jobs go soon, so the API server's store stays small


def n(count: int) -> int:
    return max(2, round(count * SCALE))


def fate(run_for: str) -> dict[str, Any]:
    return {"annotations": {"mstc.test/run-for": run_for}}


class Bench:
    def __init__(self, stack: StackInfo) -> None:
        self.stack = stack
        self.api = k8s_config.new_client_from_config(config_file=str(stack.kubeconfig))
        self.batch, self.core = k8s.BatchV1Api(self.api), k8s.CoreV1Api(self.api)
        user, password = stack.s3_keys
        self.s3 = Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)
        self.bucket = f"bench-{uuid.uuid4().hex[:8]}"
        self.s3.make_bucket(self.bucket)
        self.tmp = Path(tempfile.mkdtemp(prefix="mstc-bench-"))
        self.namespaces = Namespaces(self.core, stack.s3_keys)
        self.bare_loop = BareLoop(self.api, stack.env, JOB_TTL_SECONDS, self.namespaces)
        self.series: dict[str, list[tuple[float, float]]] = {}  # reply delays over time, by run

    # --- set-up -------------------------------------------------------------------------------

    @contextmanager
    def worker(self, **env: str) -> Iterator[tuple[WorkerProcess, str, str]]:
        with self.workers(1, **env) as (procs, ns, queue):
            yield procs[0], ns, queue

    @contextmanager
    def workers(self, replicas: int, **env: str) -> Iterator[tuple[list[WorkerProcess], str, str]]:
        """`replicas` worker replicas on one queue and namespace, as the chart would run them."""
        ns, queue = self.namespaces.make(), f"bench.work.{uuid.uuid4().hex[:8]}"
        settings = {
            "MSTC_NAMESPACE": ns,
            "MSTC_WORK_QUEUE": queue,
            "MSTC_JOB_TTL_SECONDS": str(JOB_TTL_SECONDS),
        }
        procs = []
        for index in range(replicas):
            log_dir = self.tmp / f"{queue}-{index}"
            log_dir.mkdir()
            procs.append(WorkerProcess(self.stack, {**settings, **env}, log_dir))
        try:
            for proc in procs:
                proc.start()
            yield procs, ns, queue
        finally:
            for proc in procs:
                proc.stop()
            self.namespaces.drop(ns)

    def request(self, run_for: str) -> dict[str, Any]:
        # A timeout well past the Job's run, or the default (15 min) ends long Jobs first.
        minutes = max(15, math.ceil(int(run_for.rstrip("s")) / 60) + 15)
        return {
            "image": "bench/job:1",
            "jobName": "bench",
            "inputBucket": self.bucket,
            "timeOut": minutes,
            **fate(run_for),
        }

    # --- through the worker (the other way, the bare loop, is bench/bare.py) ---------------

    def through_worker(self, client: TimedClient, queue: str, count: int,
                       run_for: str | Sequence[str], *, together: bool,
                       ) -> tuple[list[float], float, list[dict[str, Any]]]:  # fmt: skip
        """Latencies (publish to reply), wall time, and the replies.

        `run_for`: every Job's run, or each one's in the order sent (only `together`).
        """
        latencies: list[float] = []
        replies: list[dict[str, Any]] = []
        start = client.started = time.monotonic()
        if together:
            runs = [run_for] * count if isinstance(run_for, str) else list(run_for)
            sent = {client.send(self.request(each), queue=queue): time.monotonic()
                    for each in runs}  # fmt: skip
            for cid, at in sent.items():
                replies.append(client.wait(cid, timeout=1800))
                latencies.append(client.reply_times[cid] - at)
        else:
            assert isinstance(run_for, str), "one at a time, every Job runs the same"
            for _ in range(count):
                at = time.monotonic()
                cid = client.send(self.request(run_for), queue=queue)
                replies.append(client.wait(cid, timeout=600))
                latencies.append(client.reply_times[cid] - at)
        return latencies, time.monotonic() - start, replies

    # --- scenarios ---------------------------------------------------------------------------

    def delays(self, ends: JobEnds, client: TimedClient, label: str) -> dict[str, float]:
        """The reply delay row of a run (see bench/ends.py); its series is kept for the plot."""
        ends.wait_ended(list(client.replied_at), timeout=30)
        delays, series = reply_delays(ends, client.replied_at, client.started)
        self.series[label] = [(round(t, 2), round(d, 3)) for t, d in series]
        timed: dict[str, float] = {
            "reply_delay_jobs": len(delays),
            "bench_watch_relists": ends.relists,
        }
        if not delays:
            return timed
        return {"reply_delay_p50_s": round(pct(delays, 50), 2),
                "reply_delay_p99_s": round(pct(delays, 99), 2),
                "reply_delay_max_s": round(max(delays), 2), **timed}  # fmt: skip

    @contextmanager
    def watched(self, namespace: str) -> Iterator[tuple[JobEnds, TimedClient]]:
        """The bench's watch of `namespace`'s Job ends and a timed client, for one run."""
        ends, client = JobEnds(self.batch, namespace).start(), TimedClient(self.stack)
        try:
            yield ends, client
        finally:
            ends.stop()
            client.close()

    def overhead(self, count: int) -> dict[str, Any]:
        with self.worker() as (_w, ns, queue), self.watched(ns) as (ends, client):
            worker, _, _ = self.through_worker(client, queue, count, "0s", together=False)
            delays = self.delays(ends, client, "overhead")
        bare = self.bare_loop.run(self.request("0s"), count, together=False)
        row: dict[str, float] = {"jobs": count}
        for name, values in (("worker", worker), ("bare", bare.latencies)):
            for q in (50, 95, 99):
                row[f"{name}_p{q}_s"] = round(pct(values, q), 3)
        row["p99_ratio"] = round(row["worker_p99_s"] / row["bare_p99_s"], 2)
        return row | delays

    def worker_run(self, count: int, label: str, replicas: int = 1,
                   profile: Path | None = None, **env: str) -> dict[str, Any]:  # fmt: skip
        """`count` 0-second Jobs sent at once to `replicas` replicas: rate, delays, CPU, API calls.

        With `profile`, py-spy samples the worker's processes and the API server's pprof
        profiles itself during the run, and both summaries join the row (a profiled run is
        slower: it is never one of the runs a rate is taken from).
        """
        with (
            self.workers(replicas, **{"MSTC_CONCURRENCY": "1000", **env}) as (procs, ns, queue),
            self.watched(ns) as (ends, client),
        ):
            before, requests = cpu_seconds(self.stack, procs), api_requests(self.stack)
            client_before = time.process_time()
            profiling = profiles.start(self.stack, procs, profile) if profile else None
            _, wall, _ = self.through_worker(client, queue, count, "0s", together=True)
            client_cpu = round(time.process_time() - client_before, 1)
            cpu = diff(cpu_seconds(self.stack, procs), before)
            row = {"jobs_per_s": round(count / wall, 1),
                   "cpu_s": cpu | {"bench client": client_cpu},
                   "api_requests_per_job": per_job(api_requests(self.stack), requests, count),
                   **self.delays(ends, client, label)}  # fmt: skip
            if profiling is not None:
                row["profile"] = profiling.finish()
        return row

    def bare_run(self, count: int) -> dict[str, Any]:
        before, requests = cpu_seconds(self.stack, []), api_requests(self.stack)
        bare = self.bare_loop.run(self.request("0s"), count, together=True)
        cpu = diff(cpu_seconds(self.stack, []), before)
        return {"jobs_per_s": round(count / bare.wall_s, 1),
                "cpu_s": cpu | {"bench client (the bare loop)": bare.client_cpu_s},
                "api_requests_per_job": per_job(api_requests(self.stack), requests, count)}  # fmt: skip

    def throughput(self, count: int, runs: int = 3) -> dict[str, Any]:
        """Median of `runs` worker runs against the median of as many bare runs, taken in
        turns so that a drift of the stack (etcd's size, caches) touches both alike; then one
        more, profiled, worker run."""
        workers, bares = [], []
        for run in range(runs):
            workers.append(self.worker_run(count, f"throughput-{run + 1}"))
            bares.append(self.bare_run(count))
        worker = sorted(workers, key=lambda r: r["jobs_per_s"])[runs // 2]
        bare = sorted(bares, key=lambda r: r["jobs_per_s"])[runs // 2]
        profiled = self.worker_run(count, "throughput-profiled", profile=OUT / "profiles")
        return {"jobs": count, "runs": runs,
                "worker_jobs_per_s": worker["jobs_per_s"], "bare_jobs_per_s": bare["jobs_per_s"],
                "ratio": round(worker["jobs_per_s"] / bare["jobs_per_s"], 2),
                "worker_runs_jobs_per_s": [r["jobs_per_s"] for r in workers],
                "bare_runs_jobs_per_s": [r["jobs_per_s"] for r in bares],
                "reply_delay_p50_s": worker.get("reply_delay_p50_s"),
                "reply_delay_p99_s": worker.get("reply_delay_p99_s"),
                "cpu_s_worker_run": worker["cpu_s"], "cpu_s_bare_run": bare["cpu_s"],
                "cpu_s_per_job_worker_run": round(sum(worker["cpu_s"].values()) / count, 4),
                "cpu_s_per_job_bare_run": round(sum(bare["cpu_s"].values()) / count, 4),
                "api_requests_per_job_worker_run": worker["api_requests_per_job"],
                "api_requests_per_job_bare_run": bare["api_requests_per_job"],
                "profile": profiled.get("profile", {})}  # fmt: skip

    def capacity(self, count: int, seconds: int, label: str = "capacity",
                 runs: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """`count` Jobs of `seconds` at once; `runs` gives each its own run instead."""
        before = watch_connections(self.stack)
        with (
            self.worker(MSTC_CONCURRENCY=str(max(count, 1000))) as (proc, ns, queue),
            self.watched(ns) as (ends, client),
        ):
            peak: dict[str, float] = {"rss": 0.0, "watches": before}
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.5):
                    peak["rss"] = max(peak["rss"], tree_rss_mb(proc))
                    now = watch_connections(self.stack)
                    peak["watches"] = max(peak["watches"], now)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            _, wall, replies = self.through_worker(
                client, queue, count, runs or f"{seconds}s", together=True
            )
            stop.set()
            sampler.join()
            stamped = [client.reply_times_wall[r["jobName"]] - parse_time(r["finishedAt"])
                       for r in replies if r.get("finishedAt")]  # fmt: skip
            delays = self.delays(ends, client, label)
            delays |= after_last_ready(ends, client.replied_at, client.started)
            ended = sorted(ends.ended.values())
            row = {"jobs": count, "job_seconds": seconds, "wall_s": round(wall, 1),
                   "peak_in_flight": ends.peak_in_flight,
                   "ends_spread_s": round(ended[-1] - ended[0], 1) if ended else 0,
                   "ends_per_s": round(len(ended) / max(ended[-1] - ended[0], 1), 1) if ended else 0,
                   "peak_rss_mb": round(peak["rss"], 1),
                   # Less the bench's own watch of the namespace (JobEnds).
                   "api_watches_held": peak["watches"] - before - 1, **delays,
                   "reply_delay_after_completion_time_p50_s": round(pct(stamped, 50), 2),
                   "reply_delay_after_completion_time_p99_s": round(pct(stamped, 99), 2)}  # fmt: skip
        return row

    def java_model(self, count: int, seconds: int) -> dict[str, Any]:
        walls, delays = {}, {}
        for label, concurrency in (("one_at_a_time", "1"), ("default", None)):
            env = {"MSTC_CONCURRENCY": concurrency} if concurrency else {}
            with self.worker(**env) as (_w, ns, queue), self.watched(ns) as (ends, client):
                _, walls[label], _ = self.through_worker(client, queue, count, f"{seconds}s",
                                                         together=True)  # fmt: skip
                delays[label] = self.delays(ends, client, f"java_model-{label}")
        return {"jobs": count, "job_seconds": seconds,
                "one_at_a_time_s": round(walls["one_at_a_time"], 1),
                "default_s": round(walls["default"], 1),
                "speedup": round(walls["one_at_a_time"] / walls["default"], 1),
                "reply_delay_p99_s": {k: v.get("reply_delay_p99_s") for k, v in delays.items()}}  # fmt: skip


def run_all(stack: StackInfo, only: set[str]) -> dict[str, Any]:
    bench = Bench(stack)
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "overhead": lambda: bench.overhead(n(200)),
        "throughput": lambda: bench.throughput(n(1000)),
        "capacity": lambda: bench.capacity(n(1000), max(10, round(120 * SCALE))),
        "scale_out": lambda: scale_bench.scale_out(bench, n(1000), (1, 2, 3)),
        "java_model": lambda: bench.java_model(n(100), 5),
        "levers": lambda: levers.levers(bench, n(1000)),
        # After the others: deleting its 10,000 Jobs keeps the API server busy for a while.
        "capacity_10k": lambda: scale_bench.capacity_10k(bench, n(10_000)),
        "history": lambda: history_bench.history(stack, n(100_000)),
        "pipeline": lambda: {
            "shallow": pipeline_bench.pipeline(bench, n(1000), 1, 50),
            "deep": pipeline_bench.pipeline(bench, 10, max(2, n(100)), 10),
        },
        "dashboard": lambda: dashboard_bench.dashboard(stack, n(100_000)),
    }
    results: dict[str, Any] = {"machine": machine(), "scale": SCALE, "scenarios": {},
                               "series": bench.series}  # fmt: skip
    for name, scenario in scenarios.items():
        if only and name not in only:
            continue
        started, dropped = time.monotonic(), len(bench.namespaces.settle_s)
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        row = scenario() | {"took_s": round(time.monotonic() - started)}
        if settled := bench.namespaces.settle_s[dropped:]:
            # Part of took_s: each run's namespace is gone before the next run starts.
            row["namespaces_gone_max_s"] = max(settled)
        results["scenarios"][name] = row | {"date": time.strftime("%Y-%m-%d")}
        print(f"bench: {name}: {results['scenarios'][name]}", file=sys.stderr, flush=True)
    return results


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": localstack.versions(),
        "worker_defaults": {"MSTC_PROCESSES": "2", "MSTC_CONCURRENCY": "100"},
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> int:
    from bench.report import write_reports  # noqa: PLC0415
    from tests.support.stack import local_stack  # noqa: PLC0415

    only = set(sys.argv[1:])
    stacks = local_stack()
    stack = next(stacks)
    try:
        results = run_all(stack, only)
    finally:
        stacks.close()
    OUT.mkdir(exist_ok=True)
    print(write_reports(results, OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
