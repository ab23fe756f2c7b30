"""The bench's AMQP client: it notes when each reply arrived, the other end of a reply delay.

By correlation id (monotonic, for publish-to-reply latencies) and by Job name (monotonic, for
reply delays against bench/ends.py's watch, and wall clock, against a Job's own timestamps).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient


class TimedClient(AmqpClient):
    def __init__(self, stack: StackInfo) -> None:
        self.reply_times: dict[str, float] = {}
        self.reply_times_wall: dict[str, float] = {}
        self.replied_at: dict[str, float] = {}
        self.started = time.monotonic()
        super().__init__(stack)

    def _on_reply(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        now = time.monotonic()
        self.reply_times.setdefault(props.correlation_id, now)
        reply = json.loads(body)
        if reply.get("jobName"):
            self.reply_times_wall.setdefault(reply["jobName"], time.time())
            self.replied_at.setdefault(reply["jobName"], now)
        super()._on_reply(ch, method, props, body)


def parse_time(text: str) -> float:
    """A Kubernetes timestamp (RFC 3339, `Z` for UTC) as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
