"""The `mstc` command's exit codes, one per outcome a script may branch on.

They live apart from `cli` so that every command module (the worker's commands in `cli`, the
flow service's in `cli_flow`) returns the same codes; `cli`'s help lists them.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "exit_code_for_cancel"]


class ExitCode(IntEnum):
    SUCCEEDED = 0
    JOB_FAILED = 1
    TIMEOUT = 2
    REJECTED = 3
    UNREACHABLE = 4
    ERROR = 5
    UNKNOWN = 6
    CANCELLED = 7
    NO_SUCH_JOB = 8
    ALREADY_FINISHED = 9
    AUTH_FAILED = 10


# A cancel's answer (the worker's, directly or through the flow API); anything else, such as
# an unreadable answer or "error", is ERROR.
_CANCEL_CODES = {
    "cancelling": ExitCode.SUCCEEDED,
    "unknown": ExitCode.NO_SUCH_JOB,
    "finished": ExitCode.ALREADY_FINISHED,
    "ambiguous": ExitCode.REJECTED,
    "invalid": ExitCode.REJECTED,
}


def exit_code_for_cancel(answer_status: str) -> ExitCode:
    """The exit code of `mstc cancel` (and `mstc jobs cancel`) for the worker's answer."""
    return _CANCEL_CODES.get(answer_status, ExitCode.ERROR)
