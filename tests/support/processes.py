"""Stopping a service process in a test, and saying why when it does not stop.

`stopped_or_explained` waits for a process sent SIGTERM; if it is still running after the
grace, it asks for every thread's stack (the flow registers SIGUSR1 with faulthandler, which
writes them to its stderr log), kills it, and fails with the log, so a hang in CI is explained
by its own output instead of a bare TimeoutExpired. Standard library only: the flow process
started by `tests.flow.engine_support` imports it too.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

__all__ = ["stopped_or_explained"]

_STACKS_WRITTEN_SECONDS = 2.0


def stopped_or_explained(
    proc: subprocess.Popen[bytes], log_text: Callable[[], str], grace: float = 60.0
) -> int:
    """The exit code of `proc` once it stopped within `grace`; else AssertionError with its log
    (ending with its threads' stacks)."""
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(_STACKS_WRITTEN_SECONDS)  # faulthandler writes at once; nothing to await
        proc.kill()
        proc.wait(30)
        raise AssertionError(
            f"the process did not stop within {grace:g} s of SIGTERM; its log and stacks:\n"
            f"{log_text()[-20000:]}"
        ) from None
