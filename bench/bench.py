"""`make bench`: the worker against the bare minimum, through the real stack, in one run.

Owns the benchmark scenarios of the project (not part of `make test`: numbers are recorded,
never asserted). Each scenario runs KWOK Jobs through the real broker, worker, MinIO and API
server, and the same Jobs through a bare loop (the kubernetes client creating the Job and
watching it to Complete), on the same stack in the same run:

1. overhead: N jobs that end at once, one at a time, publish-to-reply vs create-to-Complete;
2. throughput: N jobs submitted together, completions per second, both ways;
3. capacity: N jobs in flight that each last S seconds: peak resident memory of the worker's
   processes, watch connections held on the API server, reply delay after the jobs end;
4. the Java model: the worker limited to one job in flight vs its default, N jobs of S seconds.
5. history: the flow service's list_jobs on N recorded jobs, SQLite and PostgreSQL
   (bench/history_bench.py).
6. pipeline: 1,000-task pipelines (shallow and deep) through mstc-flow against the same
   requests sent straight to the worker (bench/pipeline_bench.py).
7. dashboard: the dashboard's jobs list over HTTP on N recorded jobs, SQLite and PostgreSQL
   (bench/dashboard_bench.py).

Results go to bench/results/results.json, a Markdown table on stdout and results.md, and
results.png (when matplotlib is installed). Sizes shrink with BENCH_SCALE (e.g. 0.1).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from minio import Minio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stack"))
import localstack
from bench import dashboard_bench, history_bench, pipeline_bench
from mstc_worker import manifest
from mstc_worker.manifest import ReplyRoute
from mstc_worker.protocol import parse_request
from mstc_worker.settings import load_settings
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess

OUT = Path(__file__).parent / "results"
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
JOB_TTL_SECONDS = 5  # finished Jobs go soon, so the API server's store stays small


def n(count: int) -> int:
    return max(2, round(count * SCALE))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


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
        self.client_cpu_s = 0.0  # the bench process's CPU in the last bare run

    # --- set-up -------------------------------------------------------------------------------

    def namespace(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        user, password = self.stack.s3_keys
        self.core.create_namespaced_secret(
            name,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="mstc-minio"),
                string_data={"rootUser": user, "rootPassword": password},
            ),
        )
        return name

    @contextmanager
    def worker(self, **env: str) -> Iterator[tuple[WorkerProcess, str, str]]:
        ns, queue = self.namespace(), f"bench.work.{uuid.uuid4().hex[:8]}"
        settings = {
            "MSTC_NAMESPACE": ns,
            "MSTC_WORK_QUEUE": queue,
            "MSTC_JOB_TTL_SECONDS": str(JOB_TTL_SECONDS),
        }
        log_dir = self.tmp / queue
        log_dir.mkdir()
        proc = WorkerProcess(self.stack, {**settings, **env}, log_dir)
        proc.start()
        try:
            yield proc, ns, queue
        finally:
            proc.stop()
            self.core.delete_namespace(ns, propagation_policy="Background")

    def request(self, run_for: str) -> dict[str, Any]:
        return {
            "image": "bench/job:1",
            "jobName": "bench",
            "inputBucket": self.bucket,
            **fate(run_for),
        }

    # --- the two ways of running a Job -----------------------------------------------------

    def through_worker(self, client: TimedClient, queue: str, count: int, run_for: str,
                       *, together: bool) -> tuple[list[float], float, list[dict[str, Any]]]:  # fmt: skip
        """Latencies (publish to reply), wall time, and the replies."""
        latencies: list[float] = []
        replies: list[dict[str, Any]] = []
        start = time.monotonic()
        if together:
            sent = {client.send(self.request(run_for), queue=queue): time.monotonic()
                    for _ in range(count)}  # fmt: skip
            for cid, at in sent.items():
                replies.append(client.wait(cid, timeout=1800))
                latencies.append(client.reply_times[cid] - at)
        else:
            for _ in range(count):
                at = time.monotonic()
                cid = client.send(self.request(run_for), queue=queue)
                replies.append(client.wait(cid, timeout=600))
                latencies.append(client.reply_times[cid] - at)
        return latencies, time.monotonic() - start, replies

    def bare(self, count: int, run_for: str, *, together: bool) -> tuple[list[float], float]:
        """The bare minimum: create the worker's Job, watch it to Complete (one watch).

        As lean as a client can be, so the baseline is not slowed by its own client: raw
        JSON in and out (no model objects), one watch for all Jobs. The bench process's own
        CPU time is recorded with the result (`self.client_cpu_s`).
        """
        ns = self.namespace()
        created: dict[str, float] = {}
        done: dict[str, float] = {}
        finished = threading.Event()
        changed = threading.Condition()
        listed = self.batch.list_namespaced_job(ns, _preload_content=False)
        version = json.loads(listed.data)["metadata"]["resourceVersion"]

        def watcher() -> None:
            response = self.batch.list_namespaced_job(
                ns, watch=True, resource_version=version, _preload_content=False
            )
            for job in _watched_objects(response):
                name = job["metadata"]["name"]
                if job.get("status", {}).get("succeeded") and name not in done:
                    with changed:
                        done[name] = time.monotonic()
                        changed.notify_all()
                    if len(done) == count:
                        finished.set()
                        response.close()
                        return

        jobs = self.bare_jobs(count, run_for, ns)
        threading.Thread(target=watcher, daemon=True).start()
        cpu_before = time.process_time()
        start = time.monotonic()
        for job in jobs:
            name = job["metadata"]["name"]
            created[name] = time.monotonic()
            _drain(self.batch.create_namespaced_job(ns, job, _preload_content=False))
            if not together:
                with changed:
                    changed.wait_for(functools.partial(done.__contains__, name), timeout=600)
        finished.wait(timeout=1800)
        wall = time.monotonic() - start
        self.client_cpu_s = round(time.process_time() - cpu_before, 1)
        self.core.delete_namespace(ns, propagation_policy="Background")
        return [done[k] - created[k] for k in created if k in done], wall

    def bare_jobs(self, count: int, run_for: str, namespace: str) -> list[dict[str, Any]]:
        """The Job the worker builds for the same request, less what only the worker uses.

        Same labels, annotations, env and template, so both ways move objects of the same
        size through the API server, etcd and the controllers (a smaller bare Job would
        make every write, status update and watch event of the bare loop cheaper). The
        finalizer is left out: nothing in the bare loop would remove it.
        """
        settings = load_settings({**self.stack.env, "MSTC_NAMESPACE": namespace,
                                  "MSTC_JOB_TTL_SECONDS": str(JOB_TTL_SECONDS),
                                  "MSTC_ALLOW_DEFAULT_CREDENTIALS": "true"})  # fmt: skip
        request = parse_request(json.dumps(self.request(run_for)).encode(), settings=settings)
        jobs = []
        for _ in range(count):
            request_id = str(uuid.uuid4())
            route = ReplyRoute("amq.gen-bench", request_id)
            job = manifest.build_job(request, request_id=request_id, settings=settings, route=route)
            job["metadata"]["finalizers"] = []
            job["spec"].pop("suspend", None)  # nothing in the bare loop would resume it
            jobs.append(job)
        return jobs

    # --- scenarios ---------------------------------------------------------------------------

    def overhead(self, count: int) -> dict[str, Any]:
        with self.worker() as (_w, _ns, queue):
            client = TimedClient(self.stack)
            worker, _, _ = self.through_worker(client, queue, count, "0s", together=False)
            client.close()
        bare, _ = self.bare(count, "0s", together=False)
        row: dict[str, float] = {"jobs": count}
        for name, values in (("worker", worker), ("bare", bare)):
            for q in (50, 95, 99):
                row[f"{name}_p{q}_s"] = round(pct(values, q), 3)
        row["p99_ratio"] = round(row["worker_p99_s"] / row["bare_p99_s"], 2)
        return row

    def throughput(self, count: int) -> dict[str, Any]:
        with self.worker(MSTC_CONCURRENCY="1000") as (proc, _ns, queue):
            client = TimedClient(self.stack)
            before, requests = cpu_seconds(self.stack, proc), api_requests(self.stack)
            client_before = time.process_time()
            _, wall, _ = self.through_worker(client, queue, count, "0s", together=True)
            worker_client_cpu = round(time.process_time() - client_before, 1)
            worker_cpu = diff(cpu_seconds(self.stack, proc), before)
            worker_requests = per_job(api_requests(self.stack), requests, count)
            client.close()
        before, requests = cpu_seconds(self.stack, None), api_requests(self.stack)
        _, bare_wall = self.bare(count, "0s", together=True)
        bare_cpu = diff(cpu_seconds(self.stack, None), before)
        bare_requests = per_job(api_requests(self.stack), requests, count)
        worker_rate, bare_rate = count / wall, count / bare_wall
        return {"jobs": count, "worker_jobs_per_s": round(worker_rate, 1),
                "bare_jobs_per_s": round(bare_rate, 1),
                "ratio": round(worker_rate / bare_rate, 2),
                "cpu_s_worker_run": worker_cpu | {"bench client": worker_client_cpu},
                "cpu_s_bare_run": bare_cpu | {"bench client (the bare loop)": self.client_cpu_s},
                "api_requests_per_job_worker_run": worker_requests,
                "api_requests_per_job_bare_run": bare_requests}  # fmt: skip

    def capacity(self, count: int, seconds: int) -> dict[str, Any]:
        before = watch_connections(self.stack)
        with self.worker(MSTC_CONCURRENCY="1000") as (proc, _ns, queue):
            peak: dict[str, float] = {"rss": 0.0, "watches": before}
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.5):
                    peak["rss"] = max(peak["rss"], tree_rss_mb(proc))
                    now = watch_connections(self.stack)
                    peak["watches"] = max(peak["watches"], now)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            client = TimedClient(self.stack)
            _, wall, replies = self.through_worker(
                client, queue, count, f"{seconds}s", together=True
            )
            stop.set()
            sampler.join()
            delays = [client.reply_times_wall[r["jobName"]] - parse_time(r["finishedAt"])
                      for r in replies if r.get("finishedAt")]  # fmt: skip
            client.close()
        return {"jobs": count, "job_seconds": seconds, "wall_s": round(wall, 1),
                "peak_rss_mb": round(peak["rss"], 1),
                "api_watches_held": peak["watches"] - before,
                "reply_delay_p50_s": round(pct(delays, 50), 2),
                "reply_delay_p99_s": round(pct(delays, 99), 2)}  # fmt: skip

    def java_model(self, count: int, seconds: int) -> dict[str, Any]:
        walls = {}
        for label, concurrency in (("one_at_a_time", "1"), ("default", None)):
            env = {"MSTC_CONCURRENCY": concurrency} if concurrency else {}
            with self.worker(**env) as (_w, _ns, queue):
                client = TimedClient(self.stack)
                _, walls[label], _ = self.through_worker(client, queue, count, f"{seconds}s",
                                                         together=True)  # fmt: skip
                client.close()
        return {"jobs": count, "job_seconds": seconds,
                "one_at_a_time_s": round(walls["one_at_a_time"], 1),
                "default_s": round(walls["default"], 1),
                "speedup": round(walls["one_at_a_time"] / walls["default"], 1)}  # fmt: skip


def _drain(response: Any) -> None:
    """Read a raw response to its end and give its connection back to the pool."""
    response.read()
    response.release_conn()


def _watched_objects(response: Any) -> Iterator[dict[str, Any]]:
    """The objects of a raw watch response, one per event line."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)["object"]


class TimedClient(AmqpClient):
    """An AmqpClient that notes when each reply arrived (monotonic and wall clock)."""

    def __init__(self, stack: StackInfo) -> None:
        self.reply_times: dict[str, float] = {}
        self.reply_times_wall: dict[str, float] = {}
        super().__init__(stack)

    def _on_reply(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        self.reply_times.setdefault(props.correlation_id, time.monotonic())
        reply = json.loads(body)
        if reply.get("jobName"):
            self.reply_times_wall.setdefault(reply["jobName"], time.time())
        super()._on_reply(ch, method, props, body)


def parse_time(text: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


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


def cpu_seconds(stack: StackInfo, worker: WorkerProcess | None) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack (and the worker's processes)."""
    used: dict[str, float] = {}
    pids = stack.state_dir / "pids" if stack.state_dir else None
    parts = {p.stem: int(p.read_text()) for p in pids.glob("*.pid")} if pids else {}
    if worker is not None and worker.proc is not None:
        parts["mstc-worker"] = worker.proc.pid
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


def run_all(stack: StackInfo, only: set[str]) -> dict[str, Any]:
    bench = Bench(stack)
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "overhead": lambda: bench.overhead(n(200)),
        "throughput": lambda: bench.throughput(n(1000)),
        "capacity": lambda: bench.capacity(n(1000), max(10, round(120 * SCALE))),
        "java_model": lambda: bench.java_model(n(100), 5),
        "history": lambda: history_bench.history(stack, n(100_000)),
        "pipeline": lambda: {
            "shallow": pipeline_bench.pipeline(bench, n(1000), 1, 50),
            "deep": pipeline_bench.pipeline(bench, 10, max(2, n(100)), 10),
        },
        "dashboard": lambda: dashboard_bench.dashboard(stack, n(100_000)),
    }
    results: dict[str, Any] = {"machine": machine(), "scale": SCALE, "scenarios": {}}
    for name, scenario in scenarios.items():
        if only and name not in only:
            continue
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results["scenarios"][name] = scenario() | {"took_s": round(time.monotonic() - started)}
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
