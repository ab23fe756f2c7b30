"""The `dashboard` scenario of `make bench`: the jobs list page over HTTP at 100,000 jobs.

Owns timing the dashboard's `/ui/jobs` as a browser gets it: a real `mstc-flow` process (the
console script, as its users run it) on a store filled by history_bench's loader, SQLite and
PostgreSQL, asked over HTTP with a logged-in session cookie. Timed per request, from sending to
the whole HTML body read: the first page, and pages filtered by state, by name, and by both.
The target of issue 19 is under 300 ms; the numbers are recorded, never asserted.
"""

from __future__ import annotations

import re
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import urllib3

from bench import history_bench
from bench.meters import pct
from mstc_flow.store.db import Database
from mstc_flow.web.session import COOKIE
from tests.flow.flow_process import READ_TOKEN, RealFlow
from tests.support.stack import StackInfo

REPEAT = 50  # timed requests per page
PAGES = {
    "first_page": "/ui/jobs",
    "state_failed": "/ui/jobs?state=failed",
    "name": "/ui/jobs?name=job-7",
    "state_name": "/ui/jobs?state=failed&name=job-7",
}


def dashboard(stack: StackInfo, rows: int) -> dict[str, Any]:
    result: dict[str, Any] = {"jobs": rows}
    stores = (("sqlite", history_bench.sqlite_store), ("postgresql", history_bench.pg_store))
    for backend, store in stores:
        with store(stack) as url:
            started = time.monotonic()
            database = Database.open(url)
            try:
                history_bench.fill(database, rows)
            finally:
                database.close()
            fill_s = round(time.monotonic() - started, 1)
            with served_flow(stack, url) as flow_url:
                result[backend] = {"fill_s": fill_s} | measure(flow_url)
    return result


@contextmanager
def served_flow(stack: StackInfo, store_url: str) -> Iterator[str]:
    """A real mstc-flow on `store_url` with queues of its own (deleted afterwards)."""
    tag = uuid.uuid4().hex[:8]
    queues = {"MSTC_WORK_QUEUE": f"bench.dash.work.{tag}",
              "MSTC_FLOW_INBOX_QUEUE": f"bench.dash.inbox.{tag}",
              "MSTC_FLOW_REPLY_QUEUE": f"bench.dash.replies.{tag}"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mstc-bench-dash-") as logs:
        flow = RealFlow(stack, {**queues, "MSTC_FLOW_STORE_URL": store_url,
                                # keep all: the loaded history is older than the default 30 days
                                "MSTC_FLOW_HISTORY_RETENTION_DAYS": "0",
                                "MSTC_FLOW_REPLICA": f"bench-{tag}"}, Path(logs))  # fmt: skip
        flow.start(timeout=120)
        try:
            yield flow.url
        finally:
            flow.stop()
            delete_queues(stack, queues.values())


def delete_queues(stack: StackInfo, names: Any) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


def session_cookie(http: urllib3.PoolManager, url: str) -> str:
    """Log in through the form, as a browser does; the session cookie's value."""
    answer = http.request("POST", url + "/ui/login",
                          body=urllib.parse.urlencode({"token": READ_TOKEN}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"},
                          redirect=False)  # fmt: skip
    match = re.match(rf"{COOKIE}=([^;]+)", answer.headers.get("Set-Cookie", ""))
    if answer.status != 303 or match is None:
        raise RuntimeError(f"login refused: {answer.status} {answer.data[:200]!r}")
    return match.group(1)


def measure(url: str) -> dict[str, Any]:
    """Each page's times; then, for scale, the same server's floor (/readyz: no store, no
    template) and the same first-page query as JSON from the API (no template)."""
    http = urllib3.PoolManager(retries=False, timeout=30)
    session = {"Cookie": f"{COOKIE}={session_cookie(http, url)}"}
    out: dict[str, Any] = {}
    for name, path in PAGES.items():
        times, body = timed_get(http, url + path, session)
        out[name] = {"p50_ms": round(pct(times, 50), 1), "p95_ms": round(pct(times, 95), 1),
                     "rows": body.count(b'<tr id="job-'), "kb": round(len(body) / 1024)}  # fmt: skip
    references = {"readyz": ("/readyz", {}),
                  "api_jobs_json": ("/api/v1/jobs?limit=50",
                                    {"Authorization": f"Bearer {READ_TOKEN}"})}  # fmt: skip
    for name, (path, headers) in references.items():
        times, _body = timed_get(http, url + path, headers)
        out[name] = {"p50_ms": round(pct(times, 50), 1), "p95_ms": round(pct(times, 95), 1)}
    return out


def timed_get(http: urllib3.PoolManager, url: str, headers: dict[str, str],
              ) -> tuple[list[float], bytes]:  # fmt: skip
    """REPEAT timed GETs of `url` (whole body read) after one that warms the caches; the
    times in ms and the last body."""
    times, body = [], b""
    for attempt in range(REPEAT + 1):
        started = time.perf_counter()
        answer = http.request("GET", url, headers=headers, redirect=False)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status != 200:
            raise RuntimeError(f"GET {url}: {answer.status} {answer.data[:200]!r}")
        if attempt:
            times.append(elapsed)
        body = answer.data
    return times, body
