"""`mstc jobs ...` and `mstc catalog ...` against the flow API over real HTTP.

The server is the flow's real API (uvicorn on 127.0.0.1) over the in-memory engine of
tests/flow/api_support.py; the commands run through `cli.main` with an environment of their
own, and a few as the installed `mstc` script, as a user runs them. Checked: tables and
`--json`, the filters as the history receives them, every page with `--all`, a log's bytes,
payloads from text and files, and the exit code of each way a call can fail.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mstc_client.cli import main
from mstc_client.exit_codes import ExitCode
from mstc_flow.errors import TransientError
from tests.client.conftest import run_mstc
from tests.flow.api_support import ADMIN_TOKEN, READ_TOKEN, FakePorts, running_api

A = "a" * 64


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakePorts]]:
    ports = FakePorts()
    with running_api(ports) as url:
        yield url, ports


@pytest.fixture
def ports(served: tuple[str, FakePorts]) -> FakePorts:
    served[1].reset()
    return served[1]


@pytest.fixture
def env(served: tuple[str, FakePorts], ports: FakePorts) -> dict[str, str]:
    return {"MSTC_FLOW_URL": served[0], "MSTC_FLOW_TOKEN": ADMIN_TOKEN}


def mstc(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str
) -> tuple[int, str, str]:
    code = main(list(argv), env)
    out, err = capsys.readouterr()
    return code, out, err


def test_jobs_ls_prints_a_table(capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> None:
    code, out, err = mstc(capsys, env, "jobs", "ls")
    assert code == ExitCode.SUCCEEDED, err
    lines = out.splitlines()
    assert lines[0].split() == ["JOB", "STATE", "EXIT", "IMAGE", "ACCEPTED", "REQUEST"]
    assert lines[1].split() == ["sort-1", "succeeded", "0", "busybox:1",
                                "2026-11-30T12:00:00+00:00", "a" * 12]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["sort-1", "sort-2", "render-1",
                                                       "render-2", "bad"]  # fmt: skip
    assert err == ""


def test_jobs_ls_json_and_pages(capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> None:
    code, out, err = mstc(capsys, env, "jobs", "ls", "--limit", "2", "--json")
    assert code == ExitCode.SUCCEEDED
    first = json.loads(out)
    assert [job["jobName"] for job in first["items"]] == ["sort-1", "sort-2"]
    assert first["nextCursor"] == "p2"
    code, out, err = mstc(capsys, env, "jobs", "ls", "--limit", "2")
    assert "use --all" in err
    code, out, _ = mstc(capsys, env, "jobs", "ls", "--limit", "2", "--all", "--json")
    every = json.loads(out)
    assert len(every["items"]) == 5
    assert every["nextCursor"] is None


def test_jobs_ls_filters_reach_the_history(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], ports: FakePorts
) -> None:
    # An absolute time after the age's: a fixed date would fall before "2h ago" one day.
    until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    argv = ["jobs", "ls", "--state", "failed", "--name", "sort", "--label", "team=x",
            "--image", "busybox:1", "--since", "2h", "--until", until.isoformat()]  # fmt: skip
    code, out, err = mstc(capsys, env, *argv)
    assert code == ExitCode.SUCCEEDED, err
    asked = ports.queries[-1]
    assert (asked.state, asked.name, asked.label, asked.image) == (
        "failed", "sort", "team=x", "busybox:1",
    )  # fmt: skip
    assert asked.since is not None
    assert abs(asked.since - (datetime.now(UTC) - timedelta(hours=2))) < timedelta(minutes=1)
    assert asked.until == until
    assert out.splitlines()[1].split()[:2] == ["sort-2", "failed"]


def test_jobs_ls_flagged_asks_for_flagged_jobs_and_shows_their_flags(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], ports: FakePorts
) -> None:
    code, out, err = mstc(capsys, env, "jobs", "ls", "--flagged")
    assert code == ExitCode.SUCCEEDED, err
    assert ports.queries[-1].flagged
    lines = out.splitlines()
    assert lines[0].split()[-1] == "FLAGS"
    assert lines[1].split()[::6] == ["sort-1", "pending"]
    assert lines[2].split()[-1] == "-"
    mstc(capsys, env, "jobs", "ls")
    assert not ports.queries[-1].flagged


def test_jobs_show(capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> None:
    code, out, _ = mstc(capsys, env, "jobs", "show", "sort-1")
    assert code == ExitCode.SUCCEEDED
    assert f"requestId      {A}" in out
    assert "state          succeeded" in out
    assert 'firing         {"entry": "ingest", "kind": "trigger", "retryOf": null}' in out
    assert out.rstrip().endswith("-  succeeded")
    code, out, _ = mstc(capsys, env, "jobs", "show", A, "--json")
    shown = json.loads(out)
    assert shown["jobName"] == "sort-1"
    assert [event["event"] for event in shown["events"]] == ["accepted", "succeeded"]


def test_jobs_logs_writes_the_logs_bytes(
    capsysbinary: pytest.CaptureFixture[bytes], env: dict[str, str]
) -> None:
    assert main(["jobs", "logs", "sort-2"], env) == ExitCode.SUCCEEDED
    assert capsysbinary.readouterr().out == b"exit 1\n\xff raw byte\n"


def test_jobs_retry_and_cancel(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], ports: FakePorts
) -> None:
    code, out, _ = mstc(capsys, env, "jobs", "retry", "sort-2")
    assert code == ExitCode.SUCCEEDED
    assert out == f"retry of {'b' * 64} fired as firing {'f' * 32}\n"
    code, out, _ = mstc(capsys, env, "jobs", "cancel", "render-1", "--json")
    assert (code, json.loads(out)["status"]) == (ExitCode.SUCCEEDED, "cancelling")
    code, out, _ = mstc(capsys, env, "jobs", "cancel", "sort-1")
    assert (code, out) == (ExitCode.ALREADY_FINISHED, "sort-1 had finished: succeeded.\n")
    assert (ports.retried, ports.cancelled) == (["sort-2"], ["render-1", "sort-1"])


def test_catalog_ls(capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> None:
    code, out, _ = mstc(capsys, env, "catalog", "ls")
    assert code == ExitCode.SUCCEEDED
    lines = out.splitlines()
    assert lines[0] == ("catalog file:catalog.yaml (sha256 000000000000), "
                        "loaded 2026-11-30T12:00:00+00:00")  # fmt: skip
    assert lines[1].split() == ["ENTRY", "TRIGGER", "CONCURRENCY", "MAX", "IN", "FLIGHT"]
    assert lines[2].split() == ["ingest", "data/in/+", "allow", "unlimited"]
    assert lines[3].split() == ["process", "(by", "hand)", "skip", "2"]
    code, out, _ = mstc(capsys, env, "catalog", "ls", "--json")
    assert json.loads(out)["digest"] == "0" * 64


def test_catalog_fire_with_text_or_a_files_bytes(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], ports: FakePorts, tmp_path: Path
) -> None:
    (tmp_path / "payload.bin").write_bytes(b'{"n": 1}\n\xff')
    code, out, _ = mstc(capsys, env, "catalog", "fire", "ingest", "--payload", "héllo")
    assert (code, out) == (ExitCode.SUCCEEDED, f"ingest fired: firing {'1' * 32}\n")
    code, out, _ = mstc(capsys, env, "catalog", "fire", "ingest", "--payload",
                        f"@{tmp_path / 'payload.bin'}", "--json")  # fmt: skip
    assert json.loads(out) == {"firingId": "1" * 32}
    mstc(capsys, env, "catalog", "fire", "process")
    assert ports.fired == [("ingest", "héllo".encode()), ("ingest", b'{"n": 1}\n\xff'),
                           ("process", b"")]  # fmt: skip
    code, _, err = mstc(capsys, env, "catalog", "fire", "ingest", "--payload", "@/nonexistent")
    assert code == ExitCode.ERROR
    assert "--payload @/nonexistent: cannot read the file" in err


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("argv", "token", "code", "said"),
    [(["jobs", "retry", "sort-2"], READ_TOKEN, ExitCode.AUTH_FAILED, "read token may not"),
     (["catalog", "fire", "ingest"], READ_TOKEN, ExitCode.AUTH_FAILED, "read token may not"),
     (["jobs", "ls"], "wrong-token", ExitCode.AUTH_FAILED, "Set MSTC_FLOW_TOKEN"),
     (["jobs", "show", "nope"], ADMIN_TOKEN, ExitCode.NO_SUCH_JOB, "No job 'nope'"),
     (["jobs", "logs", "render-1"], ADMIN_TOKEN, ExitCode.NO_SUCH_JOB, "No log is stored"),
     (["catalog", "fire", "nope"], ADMIN_TOKEN, ExitCode.NO_SUCH_JOB, "no entry 'nope'"),
     (["jobs", "retry", "render-1"], ADMIN_TOKEN, ExitCode.REJECTED, "still running"),
     (["jobs", "ls", "--state", "done"], ADMIN_TOKEN, ExitCode.ERROR,
      "query parameter 'state'"),
     (["jobs", "ls", "--limit", "0"], ADMIN_TOKEN, ExitCode.ERROR, "--limit must be")],
)  # fmt: skip
def test_each_failure_has_its_exit_code_and_says_why(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], argv: list[str], token: str,
    code: ExitCode, said: str,
) -> None:  # fmt: skip
    got, out, err = mstc(capsys, {**env, "MSTC_FLOW_TOKEN": token}, *argv)
    assert got == code, err
    assert err.startswith("mstc: ")
    assert said in err
    assert out == ""


def test_unreachable_or_unable_to_serve_is_4(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], ports: FakePorts
) -> None:
    gone = {**env, "MSTC_FLOW_URL": f"http://127.0.0.1:{_closed_port()}"}
    code, _, err = mstc(capsys, gone, "jobs", "ls")
    assert code == ExitCode.UNREACHABLE
    assert "Cannot reach the flow API" in err
    ports.fail_next = TransientError("The store is unreachable.")
    code, _, err = mstc(capsys, env, "jobs", "ls")
    assert (code, err) == (ExitCode.UNREACHABLE, "mstc: The store is unreachable. (HTTP 503)\n")


@pytest.mark.parametrize(
    ("unset", "named"), [("MSTC_FLOW_URL", "MSTC_FLOW_URL"), ("MSTC_FLOW_TOKEN", "MSTC_FLOW_TOKEN")]
)
def test_a_missing_setting_is_named(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], unset: str, named: str
) -> None:
    code, _, err = mstc(capsys, {k: v for k, v in env.items() if k != unset}, "jobs", "ls")
    assert code == ExitCode.ERROR
    assert named in err


def test_url_flag_overrides_the_environment(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    elsewhere = {**env, "MSTC_FLOW_URL": f"http://127.0.0.1:{_closed_port()}"}
    code, _, _ = mstc(capsys, elsewhere, "catalog", "ls", "--url", env["MSTC_FLOW_URL"])
    assert code == ExitCode.SUCCEEDED


def test_errors_in_json_mode_are_one_object(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    code, out, _ = mstc(capsys, env, "jobs", "show", "nope", "--json")
    assert json.loads(out) == {
        "status": "error", "exitCode": 8, "errorType": "FlowNotFound",
        "error": "No job 'nope' in the history. (HTTP 404)",
    }  # fmt: skip
    assert code == ExitCode.NO_SUCH_JOB


def test_the_installed_command(env: dict[str, str], tmp_path: Path) -> None:
    listed = run_mstc("jobs", "ls", "--json", env=env, cwd=tmp_path, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["items"]) == 5
    refused = run_mstc("jobs", "cancel", "render-1", env={**env, "MSTC_FLOW_TOKEN": READ_TOKEN},
                       cwd=tmp_path, timeout=60)  # fmt: skip
    assert refused.returncode == 10
    assert "use the admin token" in refused.stderr
    helped = run_mstc("jobs", "ls", "--help", env=env, cwd=tmp_path, timeout=60)
    assert "10 the token was refused" in " ".join(helped.stdout.split())


def test_workers_asks_the_flow_service_when_one_is_configured(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    """With MSTC_FLOW_URL set, `mstc workers` lists the replicas the flow heard (stopped ones
    too) at once instead of listening for a heartbeat interval."""
    code, out, err = mstc(capsys, env, "workers")
    assert code == ExitCode.SUCCEEDED, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["REPLICA", "VERSION", "IN"]
    assert [line.split()[0] for line in lines[1:]] == ["worker-0", "worker-1"]
    assert lines[1].split()[-1] == "running"
    assert lines[2].split()[-1] == "stopping"
    code, out, err = mstc(capsys, env, "workers", "--json")
    assert code == ExitCode.SUCCEEDED, err
    assert [json.loads(line)["replica"] for line in out.splitlines()] == ["worker-0", "worker-1"]
