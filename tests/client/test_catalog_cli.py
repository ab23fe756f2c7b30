"""`mstc catalog validate`: the real console script, offline (no broker, no settings)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.client.conftest import MSTC

SEED_CSV = Path(__file__).with_name("catalogs") / "seed_jobs.csv"


def validate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # An environment without any MSTC_ setting: validating must not need one.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    return subprocess.run(
        [str(MSTC), "catalog", "validate", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_seeds_csv_is_listed_as_a_table(tmp_path: Path) -> None:
    done = validate(str(SEED_CSV), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TRIGGER", "BINDING", "KEY", "IMAGE", "CONCURRENCY"]
    assert lines[2].split() == [
        "processing-job",
        "services/mqtt_job_listener/job_complete/init-job",
        "services.mqtt_job_listener.job_complete.init-job",
        "braingeneers/job-processing:latest",
        "allow",
    ]
    assert lines[-1].endswith("2 entries, valid")


def test_json_lists_each_entry(tmp_path: Path) -> None:
    catalog = tmp_path / "flows.yaml"
    catalog.write_text(
        "entries:\n  - name: a\n    trigger: x/+\n    request: {image: 'i:1'}\n"
        "    concurrency: replace\n",
        "utf-8",
    )
    done = validate(str(catalog), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "valid"
    assert [
        (e["name"], e["trigger"], e["bindingKey"], e["concurrency"]) for e in data["entries"]
    ] == [("a", "x/+", "x.*", "replace")]


def test_a_problem_names_source_and_line_and_exits_5(tmp_path: Path) -> None:
    broken = tmp_path / "jobs.csv"
    text = SEED_CSV.read_text("utf-8").replace("2Gi,0,10Gi,20Gi,50", "2Gi,0,10Gi,20 Gi,50")
    broken.write_text(text, "utf-8")
    done = validate("jobs.csv", cwd=tmp_path)
    assert done.returncode == 5
    assert done.stdout == ""
    assert done.stderr.startswith(
        "jobs.csv, line 3: disk_limit: '20 Gi' is not a Kubernetes quantity"
    )
    as_json = validate("jobs.csv", "--json", cwd=tmp_path)
    assert (as_json.returncode, json.loads(as_json.stdout)["line"]) == (5, 3)


def test_an_unreadable_file_exits_5(tmp_path: Path) -> None:
    done = validate("missing.yaml", cwd=tmp_path)
    assert done.returncode == 5
    assert done.stderr.startswith("missing.yaml: cannot read it")
    (tmp_path / "latin1.csv").write_bytes(b"job_name,image\ncaf\xe9,img\n")
    done = validate("latin1.csv", cwd=tmp_path)
    assert (done.returncode, done.stderr.startswith("latin1.csv, line 2: not UTF-8")) == (5, True)
