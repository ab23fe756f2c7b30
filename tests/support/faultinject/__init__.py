"""Test-only fault injection for a real worker process and the processes it spawns.

The worker carries no test switches. To place a fault exactly, the fault suite starts the
worker with `fault_env(...)` added to its environment: it puts `site/` (holding a
`sitecustomize`) on PYTHONPATH and sets this package's variables (`plan.HALT_AT`,
`plan.CRASH_ON_IMAGE`). Each Python process started so reads them and wraps the worker's
own seams (`hook.py` says which step is which). With the hook on the path and no fault
variable set, nothing is wrapped: the worker runs as in production.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from tests.support.faultinject.plan import CRASH_ON_IMAGE, HALT_AT, STEPS, FaultPlan, Step

__all__ = ["SITE_DIR", "STEPS", "FaultPlan", "Step", "clear_faults", "fault_env"]

SITE_DIR = Path(__file__).parent / "site"
# `sitecustomize` imports this package, before any script or -m sets up the path.
_REPO_ROOT = Path(__file__).parents[3]


def fault_env(*, halt_at: Step | None = None, crash_on_image: str | None = None) -> dict[str, str]:
    """Environment for a worker that meets these faults (an unknown step is refused here)."""
    plan = FaultPlan.from_env({HALT_AT: halt_at or "", CRASH_ON_IMAGE: crash_on_image or ""})
    inherited = os.environ.get("PYTHONPATH")
    path = os.pathsep.join([str(SITE_DIR), str(_REPO_ROOT), *([inherited] if inherited else [])])
    return {"PYTHONPATH": path, **plan.env()}


def clear_faults(env: MutableMapping[str, str]) -> None:
    """Drop the fault variables from `env`, keeping the hook: the next start runs unharmed."""
    for name in (HALT_AT, CRASH_ON_IMAGE):
        env.pop(name, None)
