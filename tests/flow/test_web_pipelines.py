"""The dashboard's pipeline pages and flags over real HTTP, the engine an in-memory fake.

What is checked: the pipeline page draws every task as a node coloured by its state, in the
column of its stage, and every dependency as an edge, with no script (inline SVG in the HTML);
the layout's stages are the longest chain of needs; the list shows each pipeline's state and
counts and filters by state; "Retry failed" and "Cancel" need an admin session and its CSRF
token (a read session sees no buttons, and its or a forged POST is 403 with the engine never
asked); open flags show on the jobs list's rows, the job page and the overview; pipeline
events and pipeline tasks' job events become the notices a pipeline page refreshes on. The
real stack and a real browser are in tests/flow/test_dashboard_pipelines.py.
"""

from __future__ import annotations

import re
from typing import Any

from mstc_flow.live import notice, pipeline_notice
from mstc_flow.web.graph import COLUMN_GAP, MARGIN, MAX_DRAWN, NODE_WIDTH, layout, stages_of
from mstc_flow.web.session import Sessions
from tests.flow.api_support import ADMIN_TOKEN, PIPELINE_ID, READ_TOKEN, FakePorts, api_settings
from tests.flow.test_web import A, B, cookie_of, csrf_on, get, ports, post, served, url

__all__ = ["ports", "served", "url"]  # the fixtures, shared with test_web's module server

PAGE = f"/ui/pipelines/{PIPELINE_ID}"
_NODE = re.compile(r'<g class="node (\w+)" data-task="([\w-]+)"[^>]*><title>[^<]*</title>'
                   r'<rect x="(\d+)"')  # fmt: skip


def _column(stage: int) -> int:
    return MARGIN + stage * (NODE_WIDTH + COLUMN_GAP)


def test_the_pipeline_page_draws_each_task_in_its_stage_coloured_by_state(url: str) -> None:
    page = get(url, PAGE, cookie_of(url, READ_TOKEN)).data.decode()
    nodes = {name: (state, int(x)) for state, name, x in _NODE.findall(page)}
    assert nodes == {
        "split": ("succeeded", _column(0)), "sort-a": ("succeeded", _column(1)),
        "sort-b": ("failed", _column(1)), "merge": ("skipped", _column(2)),
    }  # fmt: skip
    needs = set(re.findall(r"<title>([\w-]+) needs ([\w-]+)</title>", page))
    assert needs == {("sort-a", "split"), ("sort-b", "split"), ("merge", "sort-a"),
                     ("merge", "sort-b")}  # fmt: skip
    assert "<script" not in page.split("</head>", 1)[1]  # drawn by the server, not a script
    assert '<span data-count="failed">1</span>' in page
    assert 'href="/ui/jobs/sort-b-x1"' in page  # the tasks table links each task's Job


def test_stages_are_the_longest_chain_of_needs_and_big_graphs_are_not_drawn() -> None:
    tasks: list[dict[str, Any]] = [
        {"name": "s"}, {"name": "a"}, {"name": "b", "needs": ["a"]},
        {"name": "c", "needs": ["a", "b"]}, {"name": "d", "needs": ["gone"]},
        {"name": "e", "needs": ["c", "s"]},
    ]  # fmt: skip
    # e's last need to be reached is s (stage 0): its stage still comes from c, the longest.
    assert stages_of(tasks) == {"s": 0, "a": 0, "b": 1, "c": 2, "d": 0, "e": 3}
    drawn = layout(tasks)
    assert drawn is not None
    assert (drawn.stages, len(drawn.edges)) == (4, 5)
    assert all(edge.path.startswith("M") for edge in drawn.edges)
    assert layout([{"name": f"t{n}"} for n in range(MAX_DRAWN + 1)]) is None


def test_the_pipelines_list_shows_state_and_counts_and_filters_by_state(url: str) -> None:
    cookie = cookie_of(url, READ_TOKEN)
    page = get(url, "/ui/pipelines", cookie).data.decode()
    row = page[page.index(f'id="pipeline-{PIPELINE_ID}"') :].split("</tr>", 1)[0]
    assert f'href="{PAGE}"' in row
    assert '<span class="state failed">failed</span>' in row
    assert "succeeded 2" in row
    assert "skipped 1" in row
    assert PIPELINE_ID not in get(url, "/ui/pipelines?state=running", cookie).data.decode()
    assert get(url, "/ui/pipelines?state=bogus", cookie).status == 400
    assert get(url, "/ui/pipelines/p-000000000009", cookie).status == 404


def test_a_read_session_gets_no_buttons_and_its_posts_are_refused(
    url: str, ports: FakePorts
) -> None:
    cookie = cookie_of(url, READ_TOKEN)
    page = get(url, PAGE, cookie).data.decode()
    assert "Retry failed" not in page
    assert 'name="csrf"' not in page
    admin_csrf = csrf_on(get(url, PAGE, cookie_of(url, ADMIN_TOKEN)).data.decode())
    # A read session with its own right CSRF token (its pages show none) is still refused.
    sessions = Sessions(api_settings())
    read_session = sessions.check(cookie)
    assert read_session is not None
    own_csrf = sessions.csrf(read_session)
    for action in ("retry", "cancel"):
        assert post(url, f"{PAGE}/{action}", cookie, csrf=own_csrf).status == 403
        assert post(url, f"{PAGE}/{action}", cookie, csrf=admin_csrf).status == 403
        assert post(url, f"{PAGE}/{action}", None, csrf=admin_csrf).status == 403
    assert ports.pipeline_writes == []


def test_an_admin_retries_failed_tasks_only_with_its_csrf_token(url: str, ports: FakePorts) -> None:
    cookie = cookie_of(url, ADMIN_TOKEN)
    csrf = csrf_on(get(url, PAGE, cookie).data.decode())
    assert post(url, f"{PAGE}/retry", cookie).status == 403
    assert post(url, f"{PAGE}/retry", cookie, csrf=csrf[:-2] + "xx").status == 403
    assert ports.pipeline_writes == []
    answer = post(url, f"{PAGE}/retry", cookie, csrf=csrf)
    assert answer.status == 303
    assert answer.headers["Location"].startswith(f"{PAGE}?notice=")
    assert post(url, f"{PAGE}/cancel", cookie, csrf=csrf).status == 303
    assert ports.pipeline_writes == [("retry", PIPELINE_ID), ("cancel", PIPELINE_ID)]


def test_open_flags_show_on_the_jobs_rows_the_job_page_and_the_overview(url: str) -> None:
    cookie = cookie_of(url, READ_TOKEN)
    jobs = get(url, "/ui/jobs", cookie).data.decode()
    flagged = jobs[jobs.index(f'id="job-{A}"') :].split("</tr>", 1)[0]
    assert 'data-flag="pending"' in flagged
    assert "since 2026-11-30 12:00:00" in flagged
    other = jobs[jobs.index(f'id="job-{B}"') :].split("</tr>", 1)[0]
    assert "data-flag" not in other
    assert 'data-flag="pending"' in get(url, f"/ui/parts/row/{A}", cookie).data.decode()
    job = get(url, f"/ui/jobs/{A}", cookie).data.decode()
    assert 'id="job-flags"' in job
    assert "without a running pod after 300 s" in job
    assert 'id="job-flags"' not in get(url, f"/ui/jobs/{B}", cookie).data.decode()
    overview = get(url, "/ui/", cookie).data.decode()
    item = overview[overview.index('data-flag="pending"') :].split("</li>", 1)[0]
    assert f'href="/ui/jobs/{A}"' in item
    assert "since 2026-11-30 12:00:00" in item
    assert "without a running pod after 300 s" in item


def test_pipeline_events_and_pipeline_tasks_job_events_are_notices() -> None:
    event = b'{"event": "task", "pipelineId": "p-1", "task": "merge", "state": "failed"}'
    assert notice("mstc.pipeline.task.failed.demo", event) == {
        "kind": "pipeline", "pipelineId": "p-1", "state": "failed", "task": "merge",
    }  # fmt: skip
    assert pipeline_notice({"event": "started"}) is None
    job = b'{"requestId": "r1", "event": "failed", "correlationId": "pipe:a-0123456789abcdef"}'
    assert (notice("mstc.job.failed", job) or {}).get("pipelineTask") is True
