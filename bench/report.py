"""The benchmark's results as JSON, a Markdown table and a plot, written side by side.

The README's benchmark table is the same Markdown table, written between its markers by
every run (`update_readme`), so no number there is typed by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
START = "<!-- bench-table:start (written by `make bench`: bench/report.py) -->"
END = "<!-- bench-table:end -->"

TARGETS = {
    "overhead": ("p99_ratio", "<= 1.3"),
    "throughput": ("ratio", ">= 0.95 (median of three runs each way)"),
    "capacity": ("reply_delay_p99_s", "<= 1 s; peak_rss_mb <= 400 MB, watches flat"),
    "capacity_10k": (
        "peak_in_flight",
        "= jobs in <= 1024 MB, watches flat, reply_delay_p99_s <= 1 s",
    ),
    "scale_out": ("jobs_per_s", "and reply delays at 1, 2, 3 replicas recorded (no target set)"),
    "java_model": ("speedup", ">= 50"),
    "levers": ("cpu_ms_per_job", "with each piece of per-Job work taken away (no target set)"),
    "history": ("p99_ms", "of every list_jobs query <= 50 ms on both backends"),
    "pipeline": ("overhead_per_task_ms", "recorded (no target set)"),
    "dashboard": ("p50_ms", "of /ui/jobs < 300 ms on both backends"),
}
FLAT_WATCHES = 4  # a replica's two worker processes hold one Job and one Pod watch each
NOT_SHOWN = ("profile",)  # in results.json only: too long for a table cell


def _all(row: dict[str, Any], key: str) -> list[float]:
    """Every value named `key` anywhere in `row` (nested per backend and query)."""
    found: list[float] = []
    for k, v in row.items():
        if isinstance(v, dict):
            found += _all(v, key)
        elif k == key and isinstance(v, int | float):
            found.append(v)
    return found


def verdict(name: str, row: dict[str, Any]) -> str:
    """Whether the row meets its target, from its own numbers; why not, when it does not."""
    checks = CHECKS.get(name)
    if checks is None:
        return "recorded"
    failed = [reason for ok, reason in checks(row) if not ok]
    return "met" if not failed else "not met: " + "; ".join(failed)


Checks = list[tuple[bool, str]]


def _history(row: dict[str, Any]) -> Checks:
    worst = max(_all(row, "p99_ms"), default=1e9)
    return [(worst <= 50, f"a list_jobs p99 of {worst} ms")]


def _dashboard(row: dict[str, Any]) -> Checks:
    worst = max(_all(row, "p50_ms"), default=1e9)
    return [(worst < 300, f"a /ui/jobs p50 of {worst} ms")]


def _capacity_10k(row: dict[str, Any]) -> Checks:
    held, asked = row.get("peak_in_flight", 0), row.get("jobs", 1)
    return [(held >= asked, f"{held} of {asked} in flight at once (the first ended before "
                            "the last was created)"),
            *_capacity_checks(row, 1024)]  # fmt: skip


def _capacity_checks(row: dict[str, Any], rss_mb: float) -> list[tuple[bool, str]]:
    return [
        (row.get("reply_delay_p99_s", 99) <= 1, _delay_reason(row)),
        (row.get("peak_rss_mb", 1e9) <= rss_mb, f"{row.get('peak_rss_mb')} MB resident"),
        (row.get("api_watches_held", 99) <= FLAT_WATCHES, f"{row.get('api_watches_held')} watches"),
    ]


def _delay_reason(row: dict[str, Any]) -> str:
    """A reply delay that misses, with how fast the Jobs ended: what finishing had to keep up with."""
    said = f"reply delay p99 {row.get('reply_delay_p99_s')} s"
    if row.get("ends_per_s"):
        said += f", with {row['ends_per_s']} Jobs ending a second over {row['ends_spread_s']} s"
    if "reply_delay_p99_s_after_last_ready" in row:
        said += (f"; p99 {row['reply_delay_p99_s_after_last_ready']} s for the "
                 f"{row['reply_delay_jobs_after_last_ready']} that ended after the last pod "
                 f"was ready ({row['last_pod_ready_s']} s in)")  # fmt: skip
    return said


def _java_model_reason(row: dict[str, Any]) -> str:
    """A speedup that misses: the default run's wall beside the Jobs' own run time."""
    return (f"speedup {row.get('speedup')}: by default {row.get('jobs')} Jobs of "
            f"{row.get('job_seconds')} s took {row.get('default_s')} s, one at a time "
            f"{row.get('one_at_a_time_s')} s")  # fmt: skip


def _throughput_reason(row: dict[str, Any]) -> str:
    """The measured reason a throughput ratio falls short: CPU per Job, both ways."""
    worker, bare = row.get("cpu_s_per_job_worker_run"), row.get("cpu_s_per_job_bare_run")
    if not worker or not bare:
        return f"ratio {row.get('ratio')}"
    cpu = row.get("cpu_s_worker_run", {})
    own = sum(v for k, v in cpu.items() if k.startswith("mstc-worker")) / row["jobs"]
    extra_api = (cpu.get("kube-apiserver", 0) - row.get("cpu_s_bare_run", {}).get(
        "kube-apiserver", 0)) / row["jobs"]  # fmt: skip
    return (f"ratio {row['ratio']}: both runs keep the machine's CPUs busy, and a Job costs "
            f"{worker * 1000:.0f} CPU-ms through the worker against {bare * 1000:.0f} bare "
            f"(the worker's own processes {own * 1000:.0f}, the API server "
            f"{extra_api * 1000:+.0f}); see the profile in results.json")  # fmt: skip


CHECKS: dict[str, Callable[[dict[str, Any]], Checks]] = {
    "overhead": lambda row: [
        (row.get("p99_ratio", 99) <= 1.3, f"p99_ratio {row.get('p99_ratio')}")
    ],
    "throughput": lambda row: [(row.get("ratio", 0) >= 0.95, _throughput_reason(row))],
    "capacity": lambda row: _capacity_checks(row, 400),
    "capacity_10k": _capacity_10k,
    "java_model": lambda row: [(row.get("speedup", 0) >= 50, _java_model_reason(row))],
    "history": _history,
    "dashboard": _dashboard,
}


def table(results: dict[str, Any]) -> str:
    lines = ["| scenario | measured | target | verdict |", "|---|---|---|---|"]
    for name, row in results["scenarios"].items():
        shown = {k: v for k, v in row.items() if k not in NOT_SHOWN}
        measured = ", ".join(f"{k}={v}" for k, v in shown.items())
        target = TARGETS.get(name, ("", ""))
        lines.append(f"| {name} | {measured} | {target[0]} {target[1]} | {verdict(name, row)} |")
    m = results["machine"]
    lines.append("")
    lines.append(
        f"Machine: {m['cpus']} CPUs, {m['memory_gb']} GiB, Python {m['python']}, {m['date']}; "
        f"stack {', '.join(f'{k}={v}' for k, v in m['versions'].items())}; scale {results['scale']}."
    )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    scenarios = results["scenarios"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    if "overhead" in scenarios:
        row = scenarios["overhead"]
        qs = ["p50", "p95", "p99"]
        x = range(len(qs))
        axes[0].bar([i - 0.2 for i in x], [row[f"worker_{q}_s"] for q in qs], 0.4, label="worker")
        axes[0].bar([i + 0.2 for i in x], [row[f"bare_{q}_s"] for q in qs], 0.4, label="bare loop")
        axes[0].set_xticks(list(x), qs)
        axes[0].set_ylabel("seconds, publish to reply / create to Complete")
        axes[0].set_title(f"overhead ({row['jobs']} jobs, one at a time)")
        axes[0].legend()
    if "throughput" in scenarios:
        row = scenarios["throughput"]
        axes[1].bar(["worker", "bare loop"], [row["worker_jobs_per_s"], row["bare_jobs_per_s"]])
        axes[1].set_ylabel("jobs completed per second")
        axes[1].set_title(f"throughput ({row['jobs']} jobs at once)")
    if "java_model" in scenarios:
        row = scenarios["java_model"]
        axes[2].bar(["one at a time (Java)", "default"], [row["one_at_a_time_s"], row["default_s"]])
        axes[2].set_ylabel("seconds to finish")
        axes[2].set_title(f"{row['jobs']} jobs of {row['job_seconds']} s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def plot_delays(series: dict[str, list[list[float]]], path: Path) -> bool:
    """Reply delay of each Job against the time it ended, one panel per kind of run."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    panels = [("capacity", ["capacity", "capacity_10k"]),
              ("throughput (1,000 at once)", ["throughput-1", "throughput-2", "throughput-3"]),
              ("scale-out (1,000 at once)", ["scale_out-1", "scale_out-2", "scale_out-3"])]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4), sharey=False)
    for axis, (title, labels) in zip(axes, panels, strict=True):
        for label in labels:
            points = series.get(label)
            if points:
                axis.scatter([p[0] for p in points], [p[1] for p in points], s=2, label=label)
        axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        axis.set_xlabel("seconds since the requests were sent (when the Job ended)")
        axis.set_ylabel("reply delay after the Job ended, s")
        axis.set_title(title)
        axis.legend(markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def write_reports(results: dict[str, Any], out: Path) -> str:
    """Write them all; a run of some scenarios keeps the others' last results (and series)."""
    previous, series_file = out / "results.json", out / "reply_delays.json"
    series = results.pop("series", {})
    if previous.exists():
        kept = json.loads(previous.read_text()).get("scenarios", {})
        results = {**results, "scenarios": {**kept, **results["scenarios"]}}
    if series_file.exists():
        series = {**json.loads(series_file.read_text()), **series}
    previous.write_text(json.dumps(results, indent=2) + "\n")
    series_file.write_text(json.dumps(series) + "\n")
    text = table(results)
    (out / "results.md").write_text(text + "\n")
    plot(results, out / "results.png")
    plot_delays(series, out / "reply_delays.png")
    update_readme(text, README)
    return text


def update_readme(text: str, readme: Path) -> bool:
    """Put `text` between the README's bench-table markers; False when it has none."""
    current = readme.read_text()
    head, start, rest = current.partition(START)
    _old, end, tail = rest.partition(END)
    if not start or not end:
        return False
    readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return True
