"""The error tree: what each class tells its handler, and that errors explain themselves."""

from __future__ import annotations

import pytest

from mstc_worker.errors import (
    ConfigError,
    ImageNotAllowed,
    InvalidRequest,
    MalformedRequest,
    MstcError,
    PermanentError,
    RequestRejected,
    TransientError,
)


@pytest.mark.parametrize("cls", [InvalidRequest, MalformedRequest, ImageNotAllowed])
def test_every_rejection_is_a_permanent_error_never_retried(cls: type[RequestRejected]) -> None:
    error = cls("bad", field="image")
    assert isinstance(error, RequestRejected)
    assert isinstance(error, PermanentError)
    assert not isinstance(error, TransientError)


def test_permanent_transient_and_config_errors_are_disjoint_branches() -> None:
    for cls in (PermanentError, TransientError, ConfigError):
        assert issubclass(cls, MstcError)
    assert not issubclass(TransientError, PermanentError)
    assert not issubclass(PermanentError, TransientError)
    assert not issubclass(ConfigError, PermanentError | TransientError)


def test_str_is_the_message_a_user_can_act_on() -> None:
    error = RequestRejected("Field 'timeOut' must be a whole number; got the string \"5\".")
    assert str(error) == "Field 'timeOut' must be a whole number; got the string \"5\"."


def test_rejection_carries_the_field_at_fault() -> None:
    assert RequestRejected("x", field="env.FOO").field == "env.FOO"
    assert MalformedRequest("The request body is empty.").field is None


def test_transient_error_keeps_the_servers_retry_hint() -> None:
    assert TransientError("429 from the API server", retry_after=2.5).retry_after == 2.5
    assert TransientError("connection refused").retry_after is None


def test_config_error_lists_one_line_per_problem() -> None:
    error = ConfigError(["MSTC_CONCURRENCY: must be >= 1", "WORK_QUEUE_PORT: not a number"])
    assert error.problems == ("MSTC_CONCURRENCY: must be >= 1", "WORK_QUEUE_PORT: not a number")
    assert str(error).splitlines() == [
        "Invalid configuration; fix these environment variables:",
        "  - MSTC_CONCURRENCY: must be >= 1",
        "  - WORK_QUEUE_PORT: not a number",
    ]


def test_the_cause_chain_survives_wrapping() -> None:
    cause = ConnectionRefusedError("connect to minio:9000 refused")

    def upload() -> None:
        try:
            raise cause
        except ConnectionRefusedError as exc:
            raise TransientError("MinIO at minio:9000 refused the connection") from exc

    with pytest.raises(TransientError) as caught:
        upload()
    assert caught.value.__cause__ is cause
