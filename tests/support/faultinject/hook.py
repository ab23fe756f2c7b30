"""Places a fault plan's faults in the worker by wrapping its own seams, in test processes only.

Owns the mapping from a step's name to the exact point of a request's life it stands for:

- crash on image: `Runner._start_job`, before anything is done for a request of that image
  (the process exits with code 70, as a poison message would make it);
- before-create: `KubeClient.create_job`, with the manifest built and nothing yet sent;
- after-create: `Runner._emit` of `JobAccepted`: the Job exists and is counted as this
  process's, the service has not been told (so the request is not acked);
- before-reply: `Runner._emit` of `JobFinished`: the Job ended and is claimed, its outcome
  built, the service has not been told (so no reply is published);
- before-release: `KubeClient.release`: the reply is confirmed, the finalizer still on.

A halted thread stands still for good; only killing (or terminating) the process moves on.
The wrapping happens as `mstc_worker.runner` is first imported, which is in every process
that runs requests: spawned worker processes import it to unpickle their entry point. A seam
that was renamed or lost its parameter makes that import fail, naming it, rather than leaving
a fault test that injects nothing.
"""

from __future__ import annotations

import importlib.abc
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from functools import wraps
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

from tests.support.faultinject.plan import FaultPlan, Step

__all__ = ["RUNNER_MODULE", "install"]

log = logging.getLogger("faultinject")

RUNNER_MODULE = "mstc_worker.runner"
CRASH_EXIT_CODE = 70


def install(plan: FaultPlan) -> None:
    """Place `plan`'s faults as soon as the runner is imported (now, if it already is)."""
    if not plan.active:
        return
    if RUNNER_MODULE in sys.modules:
        _place(plan)
    else:
        sys.meta_path.insert(0, _AfterImport(RUNNER_MODULE, lambda _module: _place(plan)))


def _place(plan: FaultPlan) -> None:
    # Imported here, once the runner exists: the hook itself must not load the worker.
    from mstc_worker.kube import KubeClient  # noqa: PLC0415
    from mstc_worker.messages import JobAccepted, JobFinished  # noqa: PLC0415
    from mstc_worker.runner import Runner  # noqa: PLC0415

    image = plan.crash_on_image
    if image is not None:
        _before(Runner, "_start_job", "start", lambda start: _crash_if(start.request.image, image))
    match plan.halt_at:
        case "before-create":
            _before(
                KubeClient,
                "create_job",
                "manifest",
                lambda job: _halt("before-create", job["metadata"]["name"]),
            )
        case "after-create":
            _before(Runner, "_emit", "message", _halt_on(JobAccepted, "after-create"))
        case "before-reply":
            _before(Runner, "_emit", "message", _halt_on(JobFinished, "before-reply"))
        case "before-release":
            _before(KubeClient, "release", "name", lambda name: _halt("before-release", name))
        case None:
            pass


def _before(owner: type, method: str, parameter: str, check: Callable[[Any], None]) -> None:
    """Make `owner.method` call `check` with its argument `parameter` before it runs."""
    original = getattr(owner, method, None)
    if not callable(original) or parameter not in inspect.signature(original).parameters:
        raise RuntimeError(
            f"fault injection: {owner.__module__}.{owner.__name__}.{method}({parameter}) "
            "no longer exists; move the fault hook (tests/support/faultinject/hook.py) with it"
        )
    signature = inspect.signature(original)

    @wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check(signature.bind(*args, **kwargs).arguments[parameter])
        return original(*args, **kwargs)

    setattr(owner, method, wrapper)


def _halt_on(kind: type[Any], step: Step) -> Callable[[Any], None]:
    def check(message: Any) -> None:
        if isinstance(message, kind):
            _halt(step, message.job_name)

    return check


def _halt(step: Step, name: str) -> None:
    log.error("fault injection: halted at %s (job %s)", step, name)
    threading.Event().wait()  # nothing sets it: only killing the process moves on


def _crash_if(requested: str, image: str) -> None:
    if requested == image:
        log.error("fault injection: crashing on image %s", image)
        os._exit(CRASH_EXIT_CODE)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `then` on one module right after it is first executed, then steps aside."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]) -> None:
        self._name, self._then = name, then

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self._name:
            return None
        sys.meta_path.remove(self)  # one module, once; the finders below must not meet us again
        spec = next(
            (
                found
                for finder in sys.meta_path
                if (found := finder.find_spec(fullname, path, target)) is not None
            ),
            None,
        )
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module
        then = self._then

        def exec_then(module: ModuleType) -> None:
            execute(module)
            then(module)

        spec.loader.exec_module = exec_then  # type: ignore[method-assign]
        return spec
