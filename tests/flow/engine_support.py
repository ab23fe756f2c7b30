"""A real `mstc-flow` process for the engine's stack tests, with its catalog given by hand.

The catalog files and sources are another part's; here a test writes its entries as JSON and
this module, run as `python -m tests.flow.engine_support ENTRIES.json`, builds the `Entry`
objects and runs the service exactly as `mstc-flow` does (`mstc_flow.service.run`), printing
READY on stdout once the inbox consumes. Test-only hook, read only here: with
MSTC_TEST_KILL_AFTER_KEY set, the process kills itself (SIGKILL) right after the firings of
the first message with that routing key are committed and before the message is acked.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mstc_client.catalog import Catalog, Concurrency, Entry, Trigger
from tests.support.processes import stopped_or_explained

if TYPE_CHECKING:  # the flow process itself runs without the tests' stack tooling
    from tests.support.stack import StackInfo

ADMIN_TOKEN = "engine-test-token-0123456789"


def free_port() -> int:
    # Not tests.support.worker's: the flow process imports this module without the stack tooling.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entry_json(
    name: str, topic: str | None, request: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {"name": name, "topic": topic, "request": request, **extra}


def _catalog(path: Path) -> Catalog:
    entries = tuple(
        Entry(
            item["name"],
            Trigger.of(item["topic"]) if item.get("topic") else None,
            item["request"],
            Concurrency(item.get("concurrency", "allow")),
            int(item.get("max_in_flight", 0)),
        )
        for item in json.loads(path.read_text())
    )
    return Catalog(entries, str(path), "test")


class FlowProcess:
    """One flow replica as a subprocess; its log in `log_dir`."""

    def __init__(self, stack: StackInfo, env: dict[str, str], entries: list[dict[str, Any]],
                 log_dir: Path) -> None:  # fmt: skip
        self.log_dir = log_dir
        self.entries_file = log_dir / "entries.json"
        self.entries_file.write_text(json.dumps(entries))
        self.port = free_port()
        self.env = {
            **os.environ, **stack.env, "MSTC_FLOW_ADMIN_TOKEN": ADMIN_TOKEN,
            "MSTC_FLOW_HTTP_HOST": "127.0.0.1", "MSTC_FLOW_HTTP_PORT": str(self.port), **env,
        }  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The flow's API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("flow-*.log"))
        )

    def start(self, **extra_env: str) -> None:
        self.starts += 1
        log = (self.log_dir / f"flow-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.flow.engine_support", str(self.entries_file)],
            env={**self.env, **extra_env}, stdout=subprocess.PIPE, stderr=log,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until READY, or EOF if it died
        if line.strip() != b"READY":
            self.proc.wait(30)
            raise AssertionError(f"flow exited with {self.proc.returncode}:\n{self.log_text}")

    def wait_killed(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        return stopped_or_explained(self.proc, lambda: self.log_text)


def _main(entries_file: str) -> int:
    from mstc_flow.service import FlowService, run  # noqa: PLC0415
    from mstc_flow.settings import load_settings  # noqa: PLC0415

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    kill_after = os.environ.get("MSTC_TEST_KILL_AFTER_KEY")

    def prepare(service: FlowService) -> None:
        service.set_catalog(_catalog(Path(entries_file)))
        if kill_after:
            handle = service.triggers.on_message

            def handle_then_die(message: Any) -> None:
                handle(message)
                if message.routing_key == kill_after:
                    logging.getLogger(__name__).warning("test hook: SIGKILL before the ack")
                    os.kill(os.getpid(), signal.SIGKILL)

            service.triggers.on_message = handle_then_die  # type: ignore[method-assign]

    def started(_service: FlowService) -> None:
        sys.stdout.write("READY\n")
        sys.stdout.flush()

    return run(load_settings(), prepare=prepare, started=started)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
