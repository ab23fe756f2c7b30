"""The fault plan: which faults a worker started by the fault suite should meet, read from its env.

Owns the test-only variables and their validation, so that the launcher (in the test
process) and the hook (in the worker's processes) agree on one spelling and one set of steps.
Nothing here imports the worker: `sitecustomize` reads the plan in every Python process that
starts with the hook on its path, most of which never run a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "CRASH_ON_IMAGE",
    "HALT_AT",
    "STEPS",
    "FaultPlan",
    "FaultPlanError",
    "Step",
]

HALT_AT = "MSTC_TEST_FAULT_HALT_AT"
CRASH_ON_IMAGE = "MSTC_TEST_FAULT_CRASH_ON_IMAGE"

# Where a request can be halted, in the order of its life.
Step = Literal["before-create", "after-create", "before-reply", "before-release"]
STEPS: tuple[Step, ...] = get_args(Step)


class FaultPlanError(ValueError):
    """A fault variable that names no fault this hook can place."""


@dataclass(frozen=True)
class FaultPlan:
    """`halt_at`: the step where every request's thread stands still until the process is
    killed; `crash_on_image`: the image whose requests make a worker process exit (code 70)."""

    halt_at: Step | None = None
    crash_on_image: str | None = None

    @property
    def active(self) -> bool:
        return self.halt_at is not None or self.crash_on_image is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaultPlan:
        """The plan `env` asks for (empty values count as unset, as with the worker's settings)."""
        return cls(
            halt_at=_step(env.get(HALT_AT) or None), crash_on_image=env.get(CRASH_ON_IMAGE) or None
        )

    def env(self) -> dict[str, str]:
        """The variables that ask for this plan."""
        wanted = {HALT_AT: self.halt_at, CRASH_ON_IMAGE: self.crash_on_image}
        return {name: value for name, value in wanted.items() if value is not None}


def _step(value: str | None) -> Step | None:
    if value is None:
        return None
    for step in STEPS:
        if value == step:
            return step
    raise FaultPlanError(f"{HALT_AT}={value!r} is not a step; use one of: {', '.join(STEPS)}")
