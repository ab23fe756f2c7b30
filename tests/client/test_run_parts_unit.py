"""The parts `Client.run` delegates to, each alone and without servers.

The run request and the body it becomes, the wait with its deadline (a real JobHandle; the
broker link is a stand-in holding the three things a wait reads), and the rules of staging and
fetching (which objects are skipped, which file is the log), over a stand-in that records the
storage calls. Uploads and downloads themselves are tested against real MinIO in test_client.py
and test_cli.py.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mstc_client import InputError, Reply, Resources, RunRequest, Status, Waiting, WaitTimeout
from mstc_client.client import Client
from mstc_client.handle import JobHandle
from mstc_client.run_request import RunOptions, as_run_request, timeout_minutes_of, wait_budget
from mstc_client.storage import Progress, Uploaded
from mstc_client.transfer import Staged, fetch_outputs, stage_inputs
from mstc_client.waiting import wait_for_reply

# --- the run request ----------------------------------------------------------------------------


def test_run_fields_given_as_arguments_make_the_same_request() -> None:
    made = as_run_request("img", "job", ["in/"], "out", {"timeout": 3, "labels": {"a": "b"}})
    expected = RunRequest("img", "job", ["in/"], "out", timeout=3, labels={"a": "b"})
    assert made == expected
    assert as_run_request(expected, None, (), None, {}) is expected


def test_a_run_request_and_run_fields_together_are_refused() -> None:
    request = RunRequest("img", "job")
    with pytest.raises(TypeError, match="not both"):
        as_run_request(request, None, (), None, {"timeout": 3})
    with pytest.raises(TypeError, match="not both"):
        as_run_request(request, "job", (), None, {})
    with pytest.raises(TypeError, match="needs a job_name"):
        as_run_request("img", None, (), None, {})


def test_run_options_are_the_keyword_fields_of_a_run_request() -> None:
    positional = {"image", "job_name", "inputs", "output_dir"}
    fields = {field.name for field in dataclasses.fields(RunRequest)}
    assert set(RunOptions.__annotations__) == fields - positional


def test_run_request_becomes_the_job_request_for_its_staged_inputs() -> None:
    run = RunRequest(
        "img", "job", timeout=7, env={"K": "V"}, resources=Resources(limits={"cpu": "1"}),
        command=("sh",), args=("-c", "true"), annotations={"n": "1"}, extra={"x": 1},
    )  # fmt: skip
    assert run.job_request("in-b", "out-b", "run-1").to_body() == {
        "image": "img", "jobName": "job", "inputBucket": "in-b", "outputBucket": "out-b",
        "prefix": "run-1", "timeOut": 7, "env": {"K": "V"}, "resources": {"limits": {"cpu": "1"}},
        "command": ["sh"], "args": ["-c", "true"], "annotations": {"n": "1"}, "x": 1,
    }  # fmt: skip
    assert "outputBucket" not in run.job_request("in-b", None, "run-1").to_body()


def test_a_fan_out_run_sends_completions_parallelism_and_the_indexed_mode() -> None:
    run = RunRequest("img", "job", completions=20, parallelism=5, indexed=True)
    body = run.job_request("b", None, "run-1").to_body()
    assert (body["completions"], body["parallelism"], body["completionMode"]) == (20, 5, "Indexed")
    plain = RunRequest("img", "job").job_request("b", None, "run-1").to_body()
    assert not {"completions", "parallelism", "completionMode"} & set(plain)


def test_mstc_run_options_fan_out() -> None:
    from mstc_client.cli import _run_request, build_parser  # noqa: PLC0415

    argv = ["run", "--image", "i", "--job-name", "j", "--completions", "20", "--parallelism",
            "5", "--indexed"]  # fmt: skip
    run = _run_request(build_parser().parse_args(argv))
    assert (run.completions, run.parallelism, run.indexed) == (20, 5, True)


def test_the_wait_is_the_job_timeout_plus_a_margin_unless_given() -> None:
    assert RunRequest("i", "j").wait_seconds == wait_budget(None) == 15 * 60 + 300
    assert RunRequest("i", "j", timeout=2).wait_seconds == 2 * 60 + 300
    assert RunRequest("i", "j", timeout=2, wait_timeout=9.5).wait_seconds == 9.5


# --- the wait -----------------------------------------------------------------------------------


class StandInLink:
    """What a wait reads of the broker link: whether it is connected, its state, `forget`."""

    def __init__(self, *, connected: bool = True, state: str = "connected") -> None:
        self.connected = threading.Event()
        if connected:
            self.connected.set()
        self.state = state
        self.forgotten: list[JobHandle] = []

    def forget(self, handle: JobHandle) -> None:
        self.forgotten.append(handle)


def _handle() -> JobHandle:
    return JobHandle({"jobName": "j"}, b"{}", "corr-1")


REPLY = Reply(result="Job j-1 complete.", status=Status.SUCCEEDED, job_name="j-1")


def test_a_reply_arriving_while_waiting_ends_the_wait() -> None:
    handle, link = _handle(), StandInLink()
    ticks: list[Waiting] = []

    def tick(waiting: Waiting) -> None:
        ticks.append(waiting)
        handle.resolve(REPLY)  # the reply comes in between two slices of the wait

    assert wait_for_reply(handle, 5, link, tick, tick_seconds=0.01) is REPLY
    assert [waiting.state for waiting in ticks] == ["queued"]
    assert link.forgotten == []


def test_at_the_deadline_the_request_is_forgotten_and_the_error_says_what_was_known() -> None:
    handle, link = _handle(), StandInLink()
    ticks: list[Waiting] = []
    handle.mark_sent()
    handle.note_progress("running", "j-1")
    with pytest.raises(WaitTimeout, match=r"No reply within 0\.05 s \(request corr-1, running"):
        wait_for_reply(handle, 0.05, link, ticks.append, tick_seconds=0.01)
    assert link.forgotten == [handle]
    assert ticks
    assert {(waiting.state, waiting.job_name) for waiting in ticks} == {("running", "j-1")}


def test_while_the_link_is_down_the_wait_reports_why() -> None:
    handle = _handle()
    ticks: list[Waiting] = []
    link = StandInLink(connected=False, state="reconnecting (attempt 2)")
    with pytest.raises(WaitTimeout):
        wait_for_reply(handle, 0.03, link, ticks.append, tick_seconds=0.01)
    assert {waiting.state for waiting in ticks} == {"reconnecting (attempt 2)"}


# --- staging and fetching -----------------------------------------------------------------------


class RecordingStorage:
    """Records the storage calls of a run; downloads "find" the names in `objects`."""

    def __init__(self, objects: Sequence[str] = ()) -> None:
        self.objects = objects
        self.calls: list[tuple[str, Any]] = []

    def ensure_bucket(self, bucket: str) -> None:
        self.calls.append(("ensure_bucket", bucket))

    def upload(
        self,
        files: Sequence[tuple[Path, str]],
        bucket: str,
        progress: Callable[[Progress], None] | None = None,
    ) -> list[Uploaded]:
        self.calls.append(("upload", (bucket, [key for _path, key in files])))
        return [Uploaded(path, key, 1, f"etag-{key}") for path, key in files]

    def download(
        self,
        bucket: str,
        prefix: str,
        output_dir: Path,
        *,
        unchanged: Mapping[str, str] | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> list[Path]:
        self.calls.append(("download", (bucket, prefix, output_dir, dict(unchanged or {}))))
        return [output_dir / name for name in self.objects]


def test_inputs_are_all_checked_before_anything_is_uploaded(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    storage = RecordingStorage()
    with pytest.raises(InputError):
        stage_inputs(storage, [tmp_path / "a.txt", tmp_path / "missing"], "b")
    assert storage.calls == []


def test_staging_makes_the_bucket_and_uploads_under_a_fresh_or_given_prefix(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.txt").write_text("a")
    storage = RecordingStorage()
    staged = stage_inputs(storage, [tmp_path / "a.txt"], "b")
    assert staged.prefix.startswith("run-")
    assert storage.calls == [("ensure_bucket", "b"), ("upload", ("b", [f"{staged.prefix}/a.txt"]))]
    assert stage_inputs(storage, [tmp_path / "a.txt"], "b", "mine").prefix == "mine"


STAGED = Staged("in", "run-1", (Uploaded(Path("a.txt"), "run-1/a.txt", 1, "e1"),))


def test_nothing_is_fetched_when_no_job_ran(tmp_path: Path) -> None:
    storage = RecordingStorage(["run-1/a.txt"])
    rejected = Reply(result="Invalid request No image: {}", status=Status.REJECTED)
    fetched = fetch_outputs(storage, STAGED, rejected, output_bucket="in", output_dir=tmp_path)
    assert (fetched.outputs, fetched.log_path, storage.calls) == ((), None, [])


def test_unchanged_inputs_are_skipped_only_when_outputs_share_their_bucket(
    tmp_path: Path,
) -> None:
    same, other = RecordingStorage(), RecordingStorage()
    fetch_outputs(same, STAGED, REPLY, output_bucket="in", output_dir=tmp_path)
    fetch_outputs(other, STAGED, REPLY, output_bucket="out", output_dir=None)
    assert same.calls == [("download", ("in", "run-1", tmp_path, {"run-1/a.txt": "e1"}))]
    assert other.calls == [("download", ("out", "run-1", Path("run-1"), {}))]


def test_the_log_is_told_apart_from_the_outputs(tmp_path: Path) -> None:
    storage = RecordingStorage(["b.txt", "run-1-j-1.log"])
    fetched = fetch_outputs(storage, STAGED, REPLY, output_bucket="in", output_dir=tmp_path)
    assert fetched.outputs == (tmp_path / "b.txt",)
    assert fetched.log_path == tmp_path / "run-1-j-1.log"


def test_the_reply_names_the_log_and_the_bucket_when_it_knows_them(tmp_path: Path) -> None:
    storage = RecordingStorage(["run-1-j-1.log", "custom.log"])
    reply = REPLY.model_copy(update={"log_object": "custom.log", "output_bucket": "elsewhere"})
    fetched = fetch_outputs(storage, STAGED, reply, output_bucket="in", output_dir=tmp_path)
    assert storage.calls[0][1][0] == "elsewhere"
    assert fetched.log_path == tmp_path / "custom.log"
    assert fetched.outputs == (tmp_path / "run-1-j-1.log",)


@pytest.mark.parametrize(
    ("value", "minutes"),
    [
        (5, 5),
        (2.9, 2),
        ("15", 15),
        (" 7 ", 7),
        ("+3", 3),
        ("", None),
        ("x", None),
        (True, None),
        (None, None),
        ([5], None),
        (float("inf"), None),
        ("9" * 5000, None),
    ],
)
def test_a_request_files_timeout_sizes_the_wait_in_every_form_the_worker_reads(
    value: object, minutes: int | None
) -> None:
    # `mstc send` sizes its wait from the file's timeOut; a Java-era "15" must not crash it.
    assert timeout_minutes_of(value) == minutes


def test_client_run_still_takes_the_image_by_keyword() -> None:
    # Before RunRequest, `run(image=..., job_name=...)` worked; callers of that form keep working.
    # The call stops at the first upload, on a client whose storage is a stub that records it.
    seen: list[Sequence[str | Path]] = []

    class Stop(Exception):
        pass

    class Recorder:
        def upload_inputs(self, inputs: Sequence[str | Path], **_: Any) -> None:
            seen.append(inputs)
            raise Stop

    client = Client.__new__(Client)
    client.upload_inputs = Recorder().upload_inputs  # type: ignore[method-assign,assignment]
    with pytest.raises(Stop):
        Client.run(client, image="x:1", job_name="j", inputs=["a"])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="image twice"):
        Client.run(client, "x:1", image="x:1", job_name="j")  # type: ignore[call-overload]
    assert seen == [["a"]]
