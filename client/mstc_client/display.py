"""What the `mstc` command shows while it works: progress, the waiting line, the summary.

On a terminal one line is redrawn in place (a bar for transfers, elapsed time and state while
waiting); elsewhere (CI logs, pipes) plain lines are printed, one per file and one every
`_PLAIN_WAIT_EVERY` seconds of waiting, because carriage returns make such logs unreadable.
Progress goes to stderr so that stdout carries only the summary (or the `--json` object).
"""

from __future__ import annotations

from typing import TextIO

from mstc_client.result import Result
from mstc_client.storage import Progress
from mstc_client.waiting import Waiting

__all__ = ["Display", "human_bytes", "human_seconds", "summary", "waiting_line"]

_PLAIN_WAIT_EVERY = 30.0
_BAR = 24


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Display:
    """Renders progress events; `close_line()` before printing anything else."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, enabled: bool = True) -> None:
        self._out = stream
        self._tty = stream.isatty() if tty is None else tty
        self._enabled = enabled
        self._open = False  # a redrawn line is on screen
        self._files_reported = 0
        self._stage = ""
        self._next_plain_wait = 0.0
        self._last_wait_state = ""

    def __call__(self, event: Progress | Waiting) -> None:
        if not self._enabled:
            return
        if isinstance(event, Waiting):
            self._waiting(event)
        else:
            self._transfer(event)

    def note(self, text: str) -> None:
        """A line of its own (e.g. "request sent"), never mixed into a redrawn one."""
        if self._enabled:
            self.close_line()
            self._line(text)

    def close_line(self) -> None:
        if self._open:
            self._line("")
            self._open = False

    def _enter(self, stage: str) -> None:
        if stage != self._stage:
            self.close_line()
            self._stage = stage
            self._files_reported = 0

    def _line(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _redraw(self, text: str) -> None:
        self._out.write(f"\r{text}\x1b[K")
        self._out.flush()
        self._open = True

    def _transfer(self, event: Progress) -> None:
        self._enter(event.stage)
        verb = "uploading" if event.stage == "upload" else "downloading"
        if self._tty:
            share = event.bytes_done / event.bytes_total if event.bytes_total else 1.0
            filled = round(share * _BAR)
            self._redraw(
                f"{verb:<11} [{'#' * filled}{'.' * (_BAR - filled)}] {share:4.0%}  "
                f"{human_bytes(event.bytes_done)}/{human_bytes(event.bytes_total)}  "
                f"{event.files_done}/{event.files_total} files"
            )
        elif event.files_done > self._files_reported:
            self._files_reported = event.files_done
            done = "uploaded" if event.stage == "upload" else "downloaded"
            self._line(
                f"{done} {event.name} ({event.files_done}/{event.files_total} files, "
                f"{human_bytes(event.bytes_done)}/{human_bytes(event.bytes_total)})"
            )

    def _waiting(self, event: Waiting) -> None:
        self._enter("wait")
        text = waiting_line(event)
        if self._tty:
            self._redraw(text)
        elif event.elapsed >= self._next_plain_wait or event.state != self._last_wait_state:
            # Not a terminal: a line now and then, and one for every change of state.
            self._next_plain_wait = event.elapsed + _PLAIN_WAIT_EVERY
            self._line(text)
        self._last_wait_state = event.state


def waiting_line(event: Waiting) -> str:
    """ "waiting for the reply  0:12  (running: sort-3f2a...)": elapsed time and state."""
    where = f"{event.state}: {event.job_name}" if event.job_name else event.state
    return f"waiting for the reply  {human_seconds(event.elapsed)}  ({where})"


def summary(result: Result) -> str:
    """The human summary printed at the end of `mstc run`."""
    reply = result.reply
    name = result.job_name or "the request"
    took = "" if reply.duration_ms is None else f" in {reply.duration_ms / 1000:.1f} s"
    code = "" if reply.exit_code is None else f", exit code {reply.exit_code}"
    lines = [f"{name}: {result.status.value}{took}{code}"]
    succeeded, failed = reply.pods_succeeded or 0, reply.pods_failed or 0
    if succeeded + failed > 1:  # a fan-out; one pod's fate is the line above
        lines.append(f"  pods     {succeeded} succeeded, {failed} failed")
    if not result.ok:
        lines.append(f"  why      {reply.explanation}")
    lines.append(f"  inputs   {len(result.inputs)} files under {result.bucket}/{result.prefix}/")
    if result.outputs:
        folder = result.outputs[0].parent
        lines.append(f"  outputs  {len(result.outputs)} files, e.g. in {folder}")
    else:
        lines.append("  outputs  none")
    lines.append(f"  log      {result.log_path or 'not found'}")
    lines.append(
        f"  time     upload {result.upload_seconds:.1f} s, wait {result.wait_seconds:.1f} s, "
        f"download {result.download_seconds:.1f} s"
    )
    return "\n".join(lines)
