"""`mstc pipeline validate`: the real console script, offline (no broker, bucket or settings)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.client.conftest import MSTC

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipelines" / "shards.json"
BROKEN = Path(__file__).with_name("pipelines")


def validate(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # An environment without any MSTC_ setting: validating must not need one.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    return subprocess.run(
        [str(MSTC), "pipeline", "validate", *args],
        env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_example_prints_its_stages_and_counts(tmp_path: Path) -> None:
    done = validate(str(EXAMPLE), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        "stage 1: make-0..make-7",
        "stage 2: square-0..square-7",
        "stage 3: merge",
        f"{EXAMPLE}: pipeline shards, 17 tasks in 3 stages, parallelism 4, valid",
    ]


def test_json_holds_the_stages_and_each_tasks_objects(tmp_path: Path) -> None:
    done = validate(str(EXAMPLE), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["taskCount"], data["parallelism"]) == ("valid", 17, 4)
    assert [len(stage) for stage in data["stages"]] == [8, 8, 1]
    merge = data["tasks"][-1]
    assert merge["dependsOn"] == [f"square-{i}" for i in range(8)]
    assert merge["inputs"] == {"results": [f"results/result-{i}.json" for i in range(8)]}
    assert data["neededFromBucket"] == []


def test_each_broken_example_exits_5_naming_task_and_field(tmp_path: Path) -> None:
    expected = {
        "cycle.json": (
            "line 13: task make-0: inputs.previous: a cycle: make-0 -> square-0 -> merge -> make-0"
        ),
        "double_writer.json": (
            "line 28: task merge: outputs.summary: 'results/result-3.json' is already written "
            "by task square-3 (outputs.result)"
        ),
        "missing_input.json": (
            "line 20: task square-0: inputs.shard: 'shards/shard-0.csv' is written by no task, "
            "so it must exist in the bucket"
        ),
    }
    for name, message in expected.items():
        done = validate(name, cwd=BROKEN)
        assert (done.returncode, done.stdout) == (5, ""), name
        assert done.stderr.startswith(f"{name}, {message}"), done.stderr
    as_json = json.loads(validate("cycle.json", "--json", cwd=BROKEN).stdout)
    assert (as_json["task"], as_json["field"], as_json["line"], as_json["exitCode"]) == (
        "make-0", "inputs.previous", 13, 5,
    )  # fmt: skip


def test_no_bucket_check_lists_what_the_bucket_must_hold(tmp_path: Path) -> None:
    done = validate("missing_input.json", "--no-bucket-check", cwd=BROKEN)
    assert done.returncode == 0, done.stderr
    needed = [f"examples/shards/shards/shard-{i}.csv" for i in range(8)]
    # Nothing writes the .csv shards, so square no longer waits for make: two stages.
    assert done.stdout.splitlines()[2] == (
        "needed from the bucket (not checked): " + ", ".join(needed)
    )
    as_json = validate("missing_input.json", "--no-bucket-check", "--json", cwd=BROKEN)
    assert json.loads(as_json.stdout)["neededFromBucket"] == needed


def test_yaml_from_stdin(tmp_path: Path) -> None:
    text = "name: p\ntasks:\n  - {name: a, image: 'i:1', outputs: {o: x}}\n"
    done = validate("-", "--format", "yaml", cwd=tmp_path, stdin=text)
    assert done.stdout.splitlines() == [
        "stage 1: a",
        "<stdin>: pipeline p, 1 task in 1 stage, parallelism 10, valid",
    ]


def test_an_unreadable_file_exits_5(tmp_path: Path) -> None:
    done = validate("missing.json", cwd=tmp_path)
    assert (done.returncode, done.stderr.startswith("missing.json: cannot read it")) == (5, True)
    (tmp_path / "latin1.json").write_bytes(b'{"name":\n"caf\xe9"}')
    done = validate("latin1.json", cwd=tmp_path)
    assert (done.returncode, done.stderr.startswith("latin1.json, line 2: not UTF-8")) == (5, True)
