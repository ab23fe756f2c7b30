"""The client's pure parts, without servers: reply parsing, naming, settings, exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mstc_client import (
    BrokerUnreachable,
    ClientConfig,
    ConfigError,
    InputError,
    JobFailed,
    JobRequest,
    JobTimedOut,
    RequestRejected,
    Resources,
    Status,
    StorageUnreachable,
    Waiting,
    WaitTimeout,
)
from mstc_client.cli import (
    ExitCode,
    exit_code_for_cancel,
    exit_code_for_error,
    exit_code_for_status,
    main,
)
from mstc_client.display import Display, waiting_line
from mstc_client.handle import JobHandle
from mstc_client.protocol import parse_progress, parse_reply
from mstc_client.result import error_for
from mstc_client.storage import Progress, input_files, local_path_for, new_prefix

# --- replies ----------------------------------------------------------------------------------


def test_full_reply_is_read_with_its_fields() -> None:
    body = {
        "result": "Job j-1 complete.", "status": "failed", "jobName": "j-1", "exitCode": 3,
        "reason": "Error", "durationMs": 1012, "logObject": "p-j-1.log", "startedAt":
        "2026-01-01T00:00:00.000Z", "somethingNew": 1,
    }  # fmt: skip
    reply = parse_reply(json.dumps(body).encode())
    assert reply.status is Status.FAILED
    assert (reply.job_name, reply.exit_code, reply.duration_ms) == ("j-1", 3, 1012)
    assert reply.log_object == "p-j-1.log"
    assert not reply.java_form
    assert "exit code 3" in reply.explanation


def test_a_fan_out_reply_says_how_many_pods_succeeded_and_failed() -> None:
    body = {"result": "Job j-1 complete.", "status": "failed", "podsSucceeded": 18,
            "podsFailed": 2}  # fmt: skip
    reply = parse_reply(json.dumps(body).encode())
    assert (reply.pods_succeeded, reply.pods_failed) == (18, 2)


def _summary_of(body: dict[str, object]) -> str:
    from mstc_client.display import summary  # noqa: PLC0415
    from mstc_client.result import Result  # noqa: PLC0415

    reply = parse_reply(json.dumps(body).encode())
    return summary(Result(reply.status, reply, "c", "b", "b", "p", (), (), None, 0, 0, 0))


def test_the_run_summary_counts_the_pods_of_a_fan_out_only() -> None:
    fan_out = {"result": "Job j complete.", "status": "failed", "jobName": "j",
               "podsSucceeded": 18, "podsFailed": 2}  # fmt: skip
    assert "  pods     18 succeeded, 2 failed" in _summary_of(fan_out).splitlines()
    one = {**fan_out, "podsSucceeded": 1, "podsFailed": 0}
    assert "pods" not in _summary_of(one)


@pytest.mark.parametrize(
    ("result", "status", "job", "reason"),
    [
        ("Job test-job-4f1c complete.", Status.UNKNOWN, "test-job-4f1c", None),
        ('Invalid request No image: {"jobName": "j"}', Status.REJECTED, None, "InvalidRequest"),
        ("com.fasterxml.jackson.core.JsonParseException: Unexpected character", Status.ERROR,
         None, "com.fasterxml.jackson.core.JsonParseException"),
        ("something else entirely", Status.ERROR, None, None),
    ],
)  # fmt: skip
def test_java_reply_with_only_result_is_understood(
    result: str, status: Status, job: str | None, reason: str | None
) -> None:
    reply = parse_reply(json.dumps({"result": result}).encode())
    assert reply.java_form
    assert reply.result == result
    assert reply.status is status
    assert reply.job_name == job
    assert reply.reason == reason


@pytest.mark.parametrize("body", [b"{nope", b"[1]", b'{"status": "failed"}', b"\xff"])
def test_unreadable_reply_ends_the_wait_as_an_error(body: bytes) -> None:
    reply = parse_reply(body)
    assert reply.status is Status.ERROR
    assert reply.reason == "UnreadableReply"


def test_reply_maps_to_its_error() -> None:
    def reply(status: str, **extra: object) -> bytes:
        return json.dumps({"result": "r", "status": status, "jobName": "j", **extra}).encode()

    assert error_for(parse_reply(reply("succeeded"))) is None
    assert error_for(parse_reply(b'{"result": "Job j complete."}')) is None
    assert isinstance(error_for(parse_reply(reply("failed", exitCode=2))), JobFailed)
    assert isinstance(error_for(parse_reply(reply("timeout"))), JobTimedOut)
    rejected = error_for(parse_reply(reply("rejected", error="Image 'x' is not allowed.")))
    assert isinstance(rejected, RequestRejected)
    assert "Image 'x' is not allowed." in str(rejected)


# --- requests -----------------------------------------------------------------------------------


def test_request_body_uses_the_java_names_and_leaves_out_what_is_unset() -> None:
    request = JobRequest(
        image="i", job_name="j", input_bucket="b", prefix="run-1", timeout_minutes=2,
        annotations={"a": "1"}, resources=Resources(limits={"cpu": "2"}), extra={"x": True},
    )  # fmt: skip
    assert request.to_body() == {
        "image": "i", "jobName": "j", "inputBucket": "b", "prefix": "run-1", "timeOut": 2,
        "annotations": {"a": "1"}, "resources": {"limits": {"cpu": "2"}}, "x": True,
    }  # fmt: skip


# --- object names -------------------------------------------------------------------------------


def test_inputs_are_named_under_the_prefix(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "b.txt").write_text("b")
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "single.csv").write_text("s")
    pairs = input_files([tmp_path / "d", tmp_path / "single.csv"], "run-1")
    assert [key for _path, key in pairs] == ["run-1/a.txt", "run-1/sub/b.txt", "run-1/single.csv"]


def test_inputs_that_would_clash_or_do_not_exist_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1")
    (tmp_path / "a.txt").write_text("2")
    with pytest.raises(InputError, match=r"would both be stored as 'run-1/a\.txt'"):
        input_files([tmp_path / "d", tmp_path / "a.txt"], "run-1")
    with pytest.raises(InputError, match="does not exist"):
        input_files([tmp_path / "missing"], "run-1")


def test_downloaded_names_stay_inside_the_output_dir(tmp_path: Path) -> None:
    assert local_path_for("run-1/a/b.txt", "run-1", tmp_path) == tmp_path / "a" / "b.txt"
    assert local_path_for("run-1-job-x.log", "run-1", tmp_path) == tmp_path / "run-1-job-x.log"
    for bad in ("run-1/../etc/passwd", "run-1/", "run-1/a//b", "run-1/a\\..\\b"):
        assert local_path_for(bad, "run-1", tmp_path) is None


def test_prefixes_are_fresh() -> None:
    first, second = new_prefix(), new_prefix()
    assert first != second
    assert first.startswith("run-")
    assert len(first) == len("run-") + 8


# --- settings -----------------------------------------------------------------------------------


def test_settings_use_the_worker_names() -> None:
    cfg = ClientConfig.from_env({
        "WORK_QUEUE_HOST": "rabbit", "WORK_QUEUE_PORT": "5673", "WORK_QUEUE_USER": "u",
        "WORK_QUEUE_PASS": "p@ss", "MINIO_SERVICE_HOST": "s3", "MINIO_SERVICE_PORT": "9001",
        "MSTC_WORK_QUEUE": "q", "MINIO_ROOT_PASSWORD": "",
    })  # fmt: skip
    assert cfg.amqp_url == "amqp://u:p%40ss@rabbit:5673/%2F"
    assert cfg.s3_endpoint == "s3:9001"
    assert cfg.s3_secret_key == "minioadmin"  # empty counts as unset
    assert cfg.work_queue == "q"
    assert "p%40ss" not in repr(cfg)
    assert cfg.amqp_url_for_display == "amqp://u:***@rabbit:5673/%2F"


def test_url_settings_win_and_take_missing_credentials_from_the_java_names() -> None:
    cfg = ClientConfig.from_env({
        "MSTC_AMQP_URL": "amqps://broker:5671/vh", "WORK_QUEUE_USER": "u", "WORK_QUEUE_PASS": "p",
        "MSTC_S3_ENDPOINT": "https://s3.example.org", "WORK_QUEUE_HOST": "ignored",
    })  # fmt: skip
    assert cfg.amqp_url == "amqps://u:p@broker:5671/vh"
    assert (cfg.s3_endpoint, cfg.s3_secure) == ("s3.example.org:443", True)


def test_any_minio_key_by_its_own_names_before_the_java_ones() -> None:
    both = {
        "MSTC_S3_ACCESS_KEY": "mstc-client", "MSTC_S3_SECRET_KEY": "client-secret",
        "MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "root-secret",
    }  # fmt: skip
    cfg = ClientConfig.from_env(both)
    assert (cfg.s3_access_key, cfg.s3_secret_key) == ("mstc-client", "client-secret")
    java = ClientConfig.from_env({"MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "root-secret"})
    assert (java.s3_access_key, java.s3_secret_key) == ("root", "root-secret")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WORK_QUEUE_PORT": "abc"}, "WORK_QUEUE_PORT"),
        ({"MSTC_AMQP_URL": "http://x"}, "MSTC_AMQP_URL"),
        ({"MSTC_S3_ENDPOINT": "http://u:secret@x:9000"}, "MSTC_S3_ENDPOINT"),
        ({"MSTC_CONNECT_TIMEOUT_SECONDS": "soon"}, "MSTC_CONNECT_TIMEOUT_SECONDS"),
    ],
)
def test_bad_settings_name_the_variable_and_never_echo_secrets(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named) as info:
        ClientConfig.from_env(env)
    assert "secret" not in str(info.value)


# --- exit codes ---------------------------------------------------------------------------------


def test_every_outcome_has_its_own_exit_code() -> None:
    codes = {status: exit_code_for_status(status) for status in Status}
    assert codes[Status.SUCCEEDED] == 0
    assert codes[Status.FAILED] == 1
    assert codes[Status.TIMEOUT] == 2
    assert codes[Status.REJECTED] == 3
    assert codes[Status.ERROR] == 5
    assert codes[Status.CANCELLED] == 7
    assert len(set(codes.values())) == len(codes)
    assert exit_code_for_error(WaitTimeout("w")) == ExitCode.TIMEOUT
    assert exit_code_for_error(BrokerUnreachable("b")) == ExitCode.UNREACHABLE
    assert exit_code_for_error(StorageUnreachable("s")) == ExitCode.UNREACHABLE
    assert exit_code_for_error(ConfigError("c")) == ExitCode.ERROR


def test_mstc_cancel_exits_by_the_answer() -> None:
    assert exit_code_for_cancel("cancelling") == ExitCode.SUCCEEDED
    assert int(exit_code_for_cancel("unknown")) == 8
    assert int(exit_code_for_cancel("finished")) == 9
    assert exit_code_for_cancel("ambiguous") == ExitCode.REJECTED
    assert exit_code_for_cancel("invalid") == ExitCode.REJECTED
    assert exit_code_for_cancel("error") == ExitCode.ERROR
    assert exit_code_for_cancel("something new") == ExitCode.ERROR


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for code in ("0  the Job succeeded", "1  the Job failed", "2  timeout", "3  the worker "
                 "rejected", "4  RabbitMQ or MinIO", "5  any other error"):  # fmt: skip
        assert code in out


def test_bad_usage_exits_5_not_argparse_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--image", "i"])
    assert info.value.code == ExitCode.ERROR
    assert "--job-name" in capsys.readouterr().err


def test_bad_settings_exit_5_with_the_variable_named(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "x.json"], env={"WORK_QUEUE_PORT": "0"})
    assert code == ExitCode.ERROR
    assert "WORK_QUEUE_PORT" in capsys.readouterr().err


# --- handles and display ------------------------------------------------------------------------


def test_handle_waits_and_keeps_the_first_reply() -> None:
    handle = JobHandle({}, b"{}")
    with pytest.raises(WaitTimeout, match="not yet sent"):
        handle.wait(0.01)
    assert handle.result() is None
    first = parse_reply(b'{"result": "Job a complete."}')
    handle.resolve(first)
    handle.resolve(parse_reply(b'{"result": "Job b complete."}'))
    assert handle.done()
    assert handle.wait(0) is first


def test_display_prints_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    show = Display(out, tty=False)
    show(Progress("upload", "run-1/a", 5, 10, 0, 2))
    show(Progress("upload", "run-1/a", 5, 10, 1, 2))
    show(Progress("upload", "run-1/b", 10, 10, 2, 2))
    assert out.getvalue().splitlines() == [
        "uploaded run-1/a (1/2 files, 5 B/10 B)",
        "uploaded run-1/b (2/2 files, 10 B/10 B)",
    ]


def test_display_redraws_one_line_on_a_terminal() -> None:
    out = io.StringIO()
    show = Display(out, tty=True)
    show(Progress("download", "k", 5, 10, 0, 1))
    show.close_line()
    assert out.getvalue().startswith("\rdownloading [############............]  50%")
    assert out.getvalue().endswith("\n")


def test_progress_messages_are_read_and_bad_ones_ignored() -> None:
    body = b'{"jobName": "sort-1", "state": "running", "namespace": "mstc-dev"}'
    assert parse_progress(body) == ("running", "sort-1")
    assert parse_progress(b'{"state": "accepted"}') == ("accepted", None)
    assert parse_progress(b"not json") is None
    assert parse_progress(b'{"jobName": "x"}') is None


def test_the_waiting_line_names_the_jobs_state_once_it_is_known() -> None:
    assert waiting_line(Waiting(12.0, "sent")) == "waiting for the reply  0:12  (sent)"
    line = waiting_line(Waiting(75.0, "running", "sort-1"))
    assert line == "waiting for the reply  1:15  (running: sort-1)"
