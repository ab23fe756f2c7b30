"""The benchmark's results as JSON, a Markdown table and a plot, written side by side.

The README's benchmark table is the same Markdown table, written between its markers by
every run (`update_readme`), so no number there is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
START = "<!-- bench-table:start (written by `make bench`: bench/report.py) -->"
END = "<!-- bench-table:end -->"

TARGETS = {
    "overhead": ("p99_ratio", "<= 1.3"),
    "throughput": ("ratio", ">= 0.8"),
    "capacity": ("peak_rss_mb", "<= 400 MB, watches flat"),
    "java_model": ("speedup", ">= 50"),
    "history": ("p99_ms", "of every list_jobs query <= 50 ms on both backends"),
    "pipeline": ("overhead_per_task_ms", "recorded (no target set)"),
    "dashboard": ("p50_ms", "of /ui/jobs < 300 ms on both backends"),
}


def table(results: dict[str, Any]) -> str:
    lines = ["| scenario | measured | target |", "|---|---|---|"]
    for name, row in results["scenarios"].items():
        measured = ", ".join(f"{k}={v}" for k, v in row.items())
        target = TARGETS.get(name, ("", ""))
        lines.append(f"| {name} | {measured} | {target[0]} {target[1]} |")
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


def write_reports(results: dict[str, Any], out: Path) -> str:
    """Write all three; a run of some scenarios keeps the others' last results."""
    previous = out / "results.json"
    if previous.exists():
        kept = json.loads(previous.read_text()).get("scenarios", {})
        results = {**results, "scenarios": {**kept, **results["scenarios"]}}
    previous.write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / "results.md").write_text(text + "\n")
    plot(results, out / "results.png")
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
