"""The `capacity_10k` and `scale_out` scenarios of `make bench`: one replica's ceiling, and more
replicas on one queue.

Owns the two questions the other scenarios leave open:
- capacity_10k: how many KWOK Jobs one replica holds in flight at once (10,000 asked), in
  what memory, with how many watches, and how soon each is answered when they end. The first
  Job lasts long enough for every one to be created before it ends (creation ran at 28 to 30
  Jobs a second on a quiet stack here; `CREATE_RATE` is a little below that), and each later
  one lasts a little longer, so that the Jobs end at about `END_RATE` a second rather than as
  fast as they were created: a reply delay at that scale then measures what holding 10,000
  costs, not a backlog of ends arriving faster than this machine finishes any Jobs (about 10
  a second at 1,000 in flight). The bench's own watch reports how many were really in flight
  together (`peak_in_flight`) and how fast they really ended (`ends_per_s`), so a slower
  stack shows as other figures, never as wrong ones.
- scale_out: the same 1,000 Jobs at once through one, two and three replicas on one queue:
  completions per second, reply delays, and each part's CPU. On one machine the replicas
  share its CPUs with the API server, so the row also gives the API server's share of the
  CPU used, how busy the machine was, and the worker's CPU per 1,000 Jobs (all replicas and
  per replica), from which a bigger cluster's figure can be worked out.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.bench import Bench

CREATE_RATE = 25  # Jobs per second the worker creates here, a little slow (measured: 28 to 30)
END_RATE = 8  # Jobs per second that end; at 1,000 in flight, delays grew past 10 a second


def capacity_10k(bench: Bench, count: int) -> dict[str, Any]:
    first = round(count / CREATE_RATE) + 30
    # Job i is created about i / CREATE_RATE s in and should end i / END_RATE s after the first.
    runs = [f"{first + round(i / END_RATE - i / CREATE_RATE)}s" for i in range(count)]
    return bench.capacity(count, first, label="capacity_10k", runs=runs)


def scale_out(bench: Bench, count: int, replicas: tuple[int, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"jobs": count}
    for replica_count in replicas:
        run = bench.worker_run(count, f"scale_out-{replica_count}", replicas=replica_count)
        row[f"replicas_{replica_count}"] = summary(run, count, replica_count)
    one = row[f"replicas_{replicas[0]}"]["jobs_per_s"]
    row["speedup"] = {f"replicas_{r}": round(row[f"replicas_{r}"]["jobs_per_s"] / one, 2)
                      for r in replicas}  # fmt: skip
    return row


def summary(run: dict[str, Any], count: int, replicas: int) -> dict[str, Any]:
    cpu: dict[str, float] = run["cpu_s"]
    used = sum(cpu.values())
    worker = sum(v for k, v in cpu.items() if k.startswith("mstc-worker"))
    wall = count / run["jobs_per_s"]
    return {
        "jobs_per_s": run["jobs_per_s"],
        "reply_delay_p50_s": run.get("reply_delay_p50_s"),
        "reply_delay_p99_s": run.get("reply_delay_p99_s"),
        "machine_busy_pct": round(100 * used / (wall * (os.cpu_count() or 1)), 1),
        "api_server_cpu_pct": round(100 * cpu.get("kube-apiserver", 0.0) / used, 1),
        "worker_cpu_pct": round(100 * worker / used, 1),
        "worker_cpu_s_per_1000_jobs": round(worker * 1000 / count, 1),
        "worker_cpu_s_per_1000_jobs_per_replica": round(worker * 1000 / count / replicas, 1),
    }
