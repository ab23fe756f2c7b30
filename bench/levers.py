"""The `levers` scenario of `make bench`: what the worker's per-Job safety work costs.

Owns the before-and-after of the levers the throughput target asked about, each measured as
the most it could give: the same 1,000 Jobs at once through the worker as it is, through
the worker with each piece of per-Job work taken away, and each beside a bare run:
- `root_credentials`: no per-Job credentials at all (MSTC_JOB_ROOT_CREDENTIALS=true: no STS
  call, no Secret, no suspend-and-resume). A pool of credentials minted ahead would remove
  less than this: only the STS call, and only from the wait, not from the CPU.
- `no_claim`: a copy of the worker whose finish skips the claim patch (and its renewal). It
  is unsafe with more than one replica and is built here only, in a temporary directory;
  a shard lease would remove no more than this (and add its own renewals).
On this machine throughput is bounded by CPU (both ways keep both cores busy), so each row
gives CPU-milliseconds per Job, both ways, beside the rates, and the Job patches per Job the
API server counted (the controllers' own included), which shows each variant ran as meant.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mstc_worker

if TYPE_CHECKING:
    from bench.bench import Bench

# The two places of runner.py the no-claim copy changes; a changed runner stops the bench
# here instead of measuring something else.
_CLAIM = """        claimed = self._kube.claim(
            job, self._holder, stale_after_s=self._settings.claim_stale_seconds
        )"""
_HOLD = "        self._claims.hold(name)\n"


@contextmanager
def worker_without_claims() -> Iterator[str]:
    """A PYTHONPATH whose `mstc_worker` finishes Jobs without claiming them."""
    with tempfile.TemporaryDirectory(prefix="mstc-bench-noclaim-") as root:
        package = Path(root) / "mstc_worker"
        shutil.copytree(Path(mstc_worker.__file__).parent, package)
        runner = package / "runner.py"
        text = runner.read_text()
        if _CLAIM not in text or _HOLD not in text:
            raise RuntimeError("runner.py changed: update bench/levers.py's no-claim copy")
        runner.write_text(text.replace(_CLAIM, "        claimed = job").replace(_HOLD, ""))
        yield root


def levers(bench: Bench, count: int) -> dict[str, Any]:
    row: dict[str, Any] = {"jobs": count}
    with worker_without_claims() as no_claim_path:
        variants: dict[str, dict[str, str]] = {
            "as_built": {},
            "root_credentials": {"MSTC_JOB_ROOT_CREDENTIALS": "true"},
            # PYTHONSAFEPATH: `python -m` would put the working directory, this checkout,
            # ahead of PYTHONPATH, and run the worker as built.
            "no_claim": {"PYTHONPATH": no_claim_path, "PYTHONSAFEPATH": "1"},
        }
        for name, env in variants.items():
            worker = bench.worker_run(count, f"levers-{name}", 1, None, **env)
            bare = bench.bare_run(count)
            row[name] = {
                "worker_jobs_per_s": worker["jobs_per_s"],
                "bare_jobs_per_s": bare["jobs_per_s"],
                "ratio": round(worker["jobs_per_s"] / bare["jobs_per_s"], 2),
                "cpu_ms_per_job": round(1000 * sum(worker["cpu_s"].values()) / count),
                "bare_cpu_ms_per_job": round(1000 * sum(bare["cpu_s"].values()) / count),
                "patch_jobs_per_job": worker["api_requests_per_job"].get("PATCH jobs", 0.0),
            }
    return row
