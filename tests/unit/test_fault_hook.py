"""The test-only fault hook: its plan's validation, what it wraps, and a worker free of faults.

The hook (tests/support/faultinject) is what the fault suite relies on to place a fault
exactly; these tests pin its rules without a server: an unknown step is refused (in the test
process and in a process started with the hook), the hook with no fault wraps nothing (so that
worker is the production one), each fault wraps exactly its seam, and the worker's own code
carries no fault switch or fault exit.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import mstc_worker
from mstc_worker.errors import PermanentError
from mstc_worker.events import JobFacts
from mstc_worker.kube import KubeClient
from mstc_worker.messages import JobAccepted, JobEnded, JobFinished
from mstc_worker.protocol import error_outcome
from mstc_worker.runner import Runner
from tests.support.faultinject import STEPS, FaultPlan, Step, fault_env, hook
from tests.support.faultinject.hook import _before, install
from tests.support.faultinject.plan import CRASH_ON_IMAGE, HALT_AT, FaultPlanError

# What fault code looked like when it lived in the worker ("at fault" is prose, not code).
_FAULT_CODE = re.compile(r"MSTC_FAULT|\bfault_\w|_fault_point|fault injection|FaultStep")
SEAMS = {
    "Runner._start_job": (Runner, "_start_job"),
    "KubeClient.create_job": (KubeClient, "create_job"),
    "Runner._emit": (Runner, "_emit"),
    "KubeClient.release": (KubeClient, "release"),
}
OUTCOME = error_outcome(PermanentError("no"), namespace="mstc-dev")
# Run in a process started as the fault suite starts the worker: which seams are wrapped.
_PROBE = f"""
from mstc_worker.kube import KubeClient
from mstc_worker.runner import Runner
owners = {{"Runner": Runner, "KubeClient": KubeClient}}
for seam in {list(SEAMS)!r}:
    owner, method = seam.split(".")
    if hasattr(getattr(owners[owner], method), "__wrapped__"):
        print(seam)
"""


def run_with_hook(**faults: str) -> subprocess.CompletedProcess[str]:
    """Run the probe with the hook on the path and `faults` (only) in the environment."""
    env = {k: v for k, v in os.environ.items() if k not in {HALT_AT, CRASH_ON_IMAGE}}
    env.update(fault_env())
    env.update(faults)
    command = [sys.executable, "-c", _PROBE]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def wrapped_seams() -> list[str]:
    return [
        name
        for name, (owner, method) in SEAMS.items()
        if hasattr(getattr(owner, method), "__wrapped__")
    ]


@pytest.mark.parametrize("step", STEPS)
def test_each_step_is_a_plan(step: Step) -> None:
    assert FaultPlan.from_env({HALT_AT: step}) == FaultPlan(halt_at=step)


@pytest.mark.parametrize("name", ["before_create", "Before-Create", "after-run", " before-reply"])
def test_an_unknown_step_is_refused_naming_the_variable_and_the_steps(name: str) -> None:
    with pytest.raises(FaultPlanError) as caught:
        FaultPlan.from_env({HALT_AT: name})
    assert str(caught.value) == (
        f"{HALT_AT}={name!r} is not a step; use one of: "
        "before-create, after-create, before-reply, before-release"
    )
    with pytest.raises(FaultPlanError):
        fault_env(halt_at=name)  # type: ignore[arg-type]  # what a typo in a test would do


def test_empty_fault_variables_ask_for_nothing() -> None:
    assert not FaultPlan.from_env({HALT_AT: "", CRASH_ON_IMAGE: ""}).active


def test_a_process_started_with_an_unknown_step_stops_at_once() -> None:
    probe = run_with_hook(**{HALT_AT: "after-run"})
    assert probe.returncode == 2
    assert probe.stdout == ""  # nothing ran: not even the import of the runner
    assert f"fault injection refused: {HALT_AT}='after-run' is not a step" in probe.stderr


def test_the_hook_without_a_fault_wraps_nothing() -> None:
    probe = run_with_hook()
    assert (probe.returncode, probe.stdout, probe.stderr) == (0, "", "")


def test_a_process_started_with_a_fault_wraps_its_seam_as_the_runner_is_imported() -> None:
    probe = run_with_hook(**{HALT_AT: "before-release"})
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["KubeClient.release"]


@pytest.mark.parametrize(
    ("plan", "seam"),
    [
        (FaultPlan(crash_on_image="example.invalid/poison:1"), "Runner._start_job"),
        (FaultPlan(halt_at="before-create"), "KubeClient.create_job"),
        (FaultPlan(halt_at="after-create"), "Runner._emit"),
        (FaultPlan(halt_at="before-reply"), "Runner._emit"),
        (FaultPlan(halt_at="before-release"), "KubeClient.release"),
    ],
)
def test_each_fault_wraps_exactly_its_seam(
    plan: FaultPlan, seam: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for owner, method in SEAMS.values():
        # Registered with monkeypatch so that the test's end puts the real method back.
        monkeypatch.setattr(owner, method, getattr(owner, method))
    install(plan)  # the runner is imported already: placed at once
    assert wrapped_seams() == [seam]


class Stopped(Exception):
    """Raised where the hook would halt the thread or end the process."""


@pytest.fixture
def stops(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Seams restored after the test; a halt or a crash is recorded and raises `Stopped`."""
    for owner, method in SEAMS.values():
        monkeypatch.setattr(owner, method, getattr(owner, method))
    seen: list[tuple[str, object]] = []

    def record(what: str, detail: object) -> None:
        seen.append((what, detail))
        raise Stopped

    monkeypatch.setattr(hook, "_halt", record)
    monkeypatch.setattr(os, "_exit", lambda code: record("exit", code))
    return seen


@pytest.mark.parametrize(
    ("step", "stopping", "passing"),
    [
        ("after-create", JobAccepted(0, 1, "job-a", adopted=False), JobEnded(0, "job-a")),
        (
            "before-reply",
            JobFinished(0, "job-a", OUTCOME, "replies", "c1", JobFacts("r" * 64)),
            JobEnded(0, "job-a"),
        ),
    ],
)
def test_a_halt_at_a_message_stops_before_the_service_is_told_and_only_for_it(
    step: Step, stopping: object, passing: object, stops: list[tuple[str, object]]
) -> None:
    install(FaultPlan(halt_at=step))
    sent: list[object] = []
    runner = SimpleNamespace(_send=sent.append)
    Runner._emit(runner, passing)  # type: ignore[arg-type]
    with pytest.raises(Stopped):
        Runner._emit(runner, stopping)  # type: ignore[arg-type]
    assert (stops, sent) == ([(step, "job-a")], [passing])


def test_a_halt_at_a_kube_call_stops_before_the_call(stops: list[tuple[str, object]]) -> None:
    install(FaultPlan(halt_at="before-create"))
    api = SimpleNamespace()  # the real call would fail at once on this stand-in
    with pytest.raises(Stopped):
        KubeClient.create_job(api, {"metadata": {"name": "job-c"}})  # type: ignore[arg-type]
    assert stops == [("before-create", "job-c")]


def test_a_halt_before_release_stops_before_the_finalizer_call(
    stops: list[tuple[str, object]],
) -> None:
    install(FaultPlan(halt_at="before-release"))
    with pytest.raises(Stopped):
        KubeClient.release(SimpleNamespace(), "job-d", known=None)  # type: ignore[arg-type]
    assert stops == [("before-release", "job-d")]


def test_a_crash_on_image_exits_70_for_that_image_only(stops: list[tuple[str, object]]) -> None:
    install(FaultPlan(crash_on_image="example.invalid/poison:1"))
    runner = SimpleNamespace()  # the real start would fail at once on this stand-in

    def start(image: str) -> None:
        Runner._start_job(runner, SimpleNamespace(request=SimpleNamespace(image=image)))  # type: ignore[arg-type]

    with pytest.raises(AttributeError, match="request_id"):  # it got to the real start
        start("example.invalid/other:1")
    with pytest.raises(Stopped):
        start("example.invalid/poison:1")
    assert stops == [("exit", 70)]


def test_a_seam_that_moved_is_named_instead_of_injecting_nothing() -> None:
    class Moved:
        def create(self, spec: object) -> None: ...

    with pytest.raises(RuntimeError, match=r"Moved\.create_job\(manifest\) no longer exists"):
        _before(Moved, "create_job", "manifest", print)
    with pytest.raises(RuntimeError, match=r"Moved\.create\(manifest\) no longer exists"):
        _before(Moved, "create", "manifest", print)


def _exits(tree: ast.AST) -> list[list[str]]:
    """For each os._exit call in `tree`: the names of the functions it sits in, outermost first."""
    found: list[list[str]] = []

    def visit(node: ast.AST, inside: list[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside = [*inside, node.name]
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "os._exit":
            found.append(inside)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, [])
    return found


def test_the_worker_has_no_fault_switch_or_fault_exit() -> None:
    package = Path(mstc_worker.__file__).parent
    for module in sorted(package.glob("*.py")):
        text = module.read_text()
        switch = _FAULT_CODE.search(text)
        assert switch is None, f"{module.name} mentions {switch.group()!r}"
        # The one exit without clean-up: a worker process whose service is gone.
        for inside in _exits(ast.parse(text)):
            assert (module.name, inside[0]) == ("runner.py", "_exit_with_parent"), inside
