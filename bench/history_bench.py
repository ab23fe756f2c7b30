"""The `history` scenario of `make bench`: list_jobs on 100,000 jobs, SQLite and PostgreSQL.

Owns filling the flow service's history with N jobs (bulk inserts into its tables, as months
of recorded events would leave them: 50 names, 20 images, 5 teams, a mix of states, spread
over 30 days) and timing the queries the API makes: the first page, filtered pages (state,
name, label, image, a time window, several filters at once), and a page deep in the listing
reached by its cursor. Also the recorder's write rate through `History.record_event`. Each
backend gets a store of its own: a temporary SQLite file, and a schema of its own in the
stack's PostgreSQL (MSTC_FLOW_TEST_PG_URL), dropped afterwards.
"""

from __future__ import annotations

import functools
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, text

from bench.meters import pct
from mstc_flow.store.db import Database
from mstc_flow.store.history import History, JobQuery
from mstc_flow.store.history_tables import HistoryJob, HistoryLabel
from tests.support.stack import StackInfo

START = datetime(2026, 1, 1, tzinfo=UTC)
STATES = ["succeeded"] * 85 + ["failed"] * 10 + ["running"] * 3 + ["rejected"] * 2
TEAMS = ["red", "blue", "green", "gold", "grey"]
REPEAT = 100  # timings per query
PAGE_DEPTH = 0.5  # the deep page starts half way down the listing


def history(stack: StackInfo, rows: int) -> dict[str, Any]:
    result: dict[str, Any] = {"jobs": rows}
    for backend, store in (("sqlite", sqlite_store), ("postgresql", pg_store)):
        with store(stack) as url:
            database = Database.open(url)
            try:
                result[backend] = measure(database, rows)
            finally:
                database.close()
    return result


@contextmanager
def sqlite_store(_stack: StackInfo) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="mstc-bench-history-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'flow.sqlite3'}"


@contextmanager
def pg_store(stack: StackInfo) -> Iterator[str]:
    url = stack.env["MSTC_FLOW_TEST_PG_URL"]
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def measure(database: Database, rows: int) -> dict[str, Any]:
    started = time.monotonic()
    fill(database, rows)
    out: dict[str, Any] = {"fill_s": round(time.monotonic() - started, 1)}
    store = History(database)
    deep = cursor_at(store, round(rows * PAGE_DEPTH))
    middle = START + timedelta(days=15)
    queries = {
        "first_page": JobQuery(),
        "state_failed": JobQuery(state="failed"),
        "name": JobQuery(name="job-7"),
        "label": JobQuery(label="team=red"),
        "image": JobQuery(image="example/image-3:1"),
        "one_day": JobQuery(since=middle, until=middle + timedelta(days=1)),
        "state_name_label": JobQuery(state="failed", name="job-7", label="team=red"),
        "rare_label": JobQuery(label="entry=entry-0001"),
        "correlation_prefix": JobQuery(correlation_prefix="cli:"),
        "deep_page": JobQuery(cursor=deep),
    }
    for name, query in queries.items():
        times = timed(functools.partial(store.list_jobs, query), REPEAT)
        out[name] = {"p50_ms": round(pct(times, 50), 2), "p99_ms": round(pct(times, 99), 2)}
    out["record_events_per_s"] = record_rate(store, 600)
    return out


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    call()  # warm the caches and the statement cache once
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def cursor_at(store: History, position: int) -> str | None:
    """The cursor of the page starting at `position` (followed page by page, 500 a page)."""
    cursor, seen = None, 0
    while seen < position:
        page = store.list_jobs(JobQuery(limit=min(500, position - seen), cursor=cursor))
        seen += len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return cursor


def fill(database: Database, rows: int, batch: int = 5000) -> None:
    rng = random.Random(17)
    with database.session() as session:
        for first in range(0, rows, batch):
            jobs, labels = [], []
            for n in range(first, min(rows, first + batch)):
                job = fake_job(rng, n, rows)
                jobs.append(job)
                labels += [{"request_id": job["request_id"], "key": k, "value": v,
                            "seen_at": job["seen_at"]} for k, v in job["labels"].items()]  # fmt: skip
            session.execute(insert(HistoryJob), jobs)
            session.execute(insert(HistoryLabel), labels)
    with database.engine.begin() as connection:  # fresh statistics, as autovacuum would make
        connection.execute(text("ANALYZE"))


def fake_job(rng: random.Random, n: int, rows: int) -> dict[str, Any]:
    seen = START + timedelta(seconds=30 * 86400 * n / rows + rng.random())
    state = rng.choice(STATES)
    request_id = uuid.UUID(int=rng.getrandbits(128)).hex * 2
    name = f"job-{rng.randrange(50)}"
    final = state in {"succeeded", "failed", "rejected"}
    return {
        "request_id": request_id,
        "requested_name": name,
        "job_name": None if state == "rejected" else f"{name}-{request_id[:5]}",
        "namespace": "jobs",
        "image": f"example/image-{rng.randrange(20)}:1",
        "state": state,
        "state_at": seen,
        "request": {"image": "example", "jobName": name, "env": {"N": str(n)}},
        "labels": {"team": rng.choice(TEAMS), "entry": f"entry-{n % 5000:04d}"},
        "correlation_id": f"flow:{request_id[:32]}" if rng.random() < 0.6 else f"cli:{n}",
        "replica": f"worker-{rng.randrange(3)}",
        "replica_accepted": True,
        "seen_at": seen,
        "accepted_at": seen,
        "running_at": seen + timedelta(seconds=1),
        "finished_at": seen + timedelta(seconds=30) if final else None,
        "exit_code": (0 if state == "succeeded" else 1) if final else None,
        "log_bucket": "logs",
        "log_object": f"{name}.log",
        "duration_ms": 30_000 if final else None,
        "updated_at": seen,
    }


def record_rate(store: History, count: int) -> float:
    """Events per second through record_event (accepted, running, succeeded per request)."""
    started = time.perf_counter()
    for n in range(count // 3):
        request_id = uuid.uuid4().hex * 2
        for offset, state in enumerate(("accepted", "running", "succeeded")):
            store.record_event({"event": state, "eventId": f"{request_id}:{state}",
                                "requestId": request_id, "requestedName": f"rate-{n}",
                                "at": (START + timedelta(seconds=offset)).isoformat(),
                                "labels": {"team": "red"}, "image": "example/rate:1"})  # fmt: skip
    return round(count // 3 * 3 / (time.perf_counter() - started), 1)
