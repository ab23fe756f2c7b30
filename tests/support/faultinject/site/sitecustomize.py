"""Python runs this at the start of every process with this directory on PYTHONPATH.

Only the fault suite's worker launcher (`tests.support.faultinject.fault_env`) puts it
there, so the worker it starts, and the worker processes that one spawns (they inherit the
environment), read the fault plan from their environment and install it. A plan naming an
unknown step stops the process at once (exit code 2, like the worker's own configuration
errors) instead of starting a worker that would inject nothing.
"""

from __future__ import annotations

import os
import sys

from tests.support.faultinject.hook import install
from tests.support.faultinject.plan import FaultPlan, FaultPlanError

try:
    install(FaultPlan.from_env(os.environ))
except FaultPlanError as exc:
    sys.stderr.write(f"fault injection refused: {exc}\n")
    sys.stderr.flush()
    # An exception here would only be printed by `site`, and the process would go on
    # without its fault; SystemExit would end it with a fatal-error dump.
    os._exit(2)
