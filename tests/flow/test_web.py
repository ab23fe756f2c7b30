"""The dashboard's rules over real HTTP (uvicorn on 127.0.0.1), the engine an in-memory fake.

What is checked: the session cookie (HttpOnly, SameSite=Strict, signed: an altered or foreign
one is no session; the token never in a URL); every page, fragment, download and the live
stream need a session; retry and cancel need an admin session and its CSRF token, else 403
and the engine is never asked; pages hold their rows without JavaScript; a download reads only
the job's own outputs; the live feed's fan-out drops a listener that falls behind. The real
stack and a real browser are in tests/flow/test_dashboard.py.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import urllib3
from prometheus_client import CollectorRegistry

from mstc_flow.api import serve
from mstc_flow.live import QUEUE_SIZE, Broadcaster, notice
from mstc_flow.web import create_site
from mstc_flow.web.session import COOKIE, Sessions
from tests.flow.api_support import (
    ADMIN_TOKEN,
    PIPELINE_ID,
    READ_TOKEN,
    FakePorts,
    api_settings,
)

A = "a" * 64
B = "b" * 64
_http = urllib3.PoolManager(retries=False, timeout=10)
READ_PATHS = ["/ui/", "/ui/jobs", f"/ui/jobs/{A}", "/ui/catalog", "/ui/parts/overview",
              f"/ui/parts/job/{A}", f"/ui/jobs/{A}/outputs/sort-1-result.csv", "/ui/pipelines",
              f"/ui/pipelines/{PIPELINE_ID}", f"/ui/parts/pipeline/{PIPELINE_ID}"]  # fmt: skip


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakePorts]]:
    ports, settings, stop = FakePorts(), api_settings(), threading.Event()
    server = serve(create_site(ports, settings, CollectorRegistry(), Broadcaster()), settings, stop)
    yield f"http://127.0.0.1:{server.port}", ports
    stop.set()
    assert server.join(10)


@pytest.fixture
def ports(served: tuple[str, FakePorts]) -> FakePorts:
    served[1].reset()
    return served[1]


@pytest.fixture
def url(served: tuple[str, FakePorts], ports: FakePorts) -> str:
    return served[0]


def login(url: str, token: str) -> urllib3.BaseHTTPResponse:
    return _http.request("POST", url + "/ui/login", body=urlencode({"token": token}),
                         headers={"Content-Type": "application/x-www-form-urlencoded"},
                         redirect=False)  # fmt: skip


def cookie_of(url: str, token: str) -> str:
    answer = login(url, token)
    assert answer.status == 303, answer.data
    match = re.match(rf"{COOKIE}=([^;]+)", answer.headers["Set-Cookie"])
    assert match is not None
    return match.group(1)


def get(url: str, path: str, cookie: str | None) -> urllib3.BaseHTTPResponse:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    return _http.request("GET", url + path, headers=headers, redirect=False)


def post(url: str, path: str, cookie: str | None, **form: str) -> urllib3.BaseHTTPResponse:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    return _http.request("POST", url + path, body=urlencode(form), headers=headers,
                         redirect=False)  # fmt: skip


def csrf_on(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


def test_login_sets_an_httponly_samesite_strict_cookie_and_no_token_in_urls(url: str) -> None:
    answer = login(url, ADMIN_TOKEN)
    assert answer.status == 303
    assert answer.headers["Location"] == "/ui/"
    set_cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie or "SameSite=Strict" in set_cookie
    assert ADMIN_TOKEN not in set_cookie
    page = get(url, "/ui/jobs", cookie_of(url, ADMIN_TOKEN)).data.decode()
    assert ADMIN_TOKEN not in page
    assert READ_TOKEN not in page


def test_a_wrong_token_gets_no_session(url: str) -> None:
    answer = login(url, "not-a-token")
    assert answer.status == 401
    assert "Set-Cookie" not in answer.headers


@pytest.mark.parametrize("path", READ_PATHS)
def test_every_page_needs_a_session(url: str, path: str) -> None:
    answer = get(url, path, None)
    assert (answer.status, answer.headers.get("Location")) == (303, "/ui/login")
    forged = get(url, path, "eyJhIjoiYWRtaW4iLCJlIjo5OTk5OTk5OTk5LCJuIjoieCJ9.c2lnbmF0dXJl")
    assert (forged.status, forged.headers.get("Location")) == (303, "/ui/login")
    assert get(url, path, cookie_of(url, READ_TOKEN)).status == 200


def test_the_live_stream_and_row_fragments_need_a_session(url: str) -> None:
    assert get(url, "/ui/events", None).status == 401
    assert get(url, f"/ui/parts/row/{A}", None).status == 401


def test_a_cookie_signed_for_other_tokens_is_no_session(url: str) -> None:
    other = Sessions(api_settings(read_token="another-read-token-0123456789")).issue("admin")
    assert get(url, "/ui/jobs", other).status == 303


def test_pages_hold_their_rows_without_javascript(url: str) -> None:
    page = get(url, "/ui/jobs", cookie_of(url, READ_TOKEN)).data.decode()
    for job in ("sort-1", "sort-2", "render-1", "render-2"):
        assert f">{job}</a>" in page
    assert f'id="job-{A}"' in page
    filtered = get(url, "/ui/jobs?state=failed", cookie_of(url, READ_TOKEN)).data.decode()
    assert ">sort-2</a>" in filtered
    assert ">sort-1</a>" not in filtered


def test_an_admin_session_retries_and_cancels_with_its_csrf_token(
    url: str, ports: FakePorts
) -> None:
    cookie = cookie_of(url, ADMIN_TOKEN)
    csrf = csrf_on(get(url, "/ui/jobs/sort-2", cookie).data.decode())
    assert post(url, "/ui/jobs/sort-2/retry", cookie, csrf=csrf).status == 303
    assert post(url, "/ui/jobs/render-1/cancel", cookie, csrf=csrf).status == 303
    assert (ports.retried, ports.cancelled) == (["sort-2"], ["render-1"])


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_no_session_a_read_session_or_a_forged_form_cannot_write(
    url: str, ports: FakePorts, action: str
) -> None:
    admin, read = cookie_of(url, ADMIN_TOKEN), cookie_of(url, READ_TOKEN)
    real_csrf = csrf_on(get(url, "/ui/jobs/sort-2", admin).data.decode())
    path = f"/ui/jobs/sort-2/{action}"
    assert post(url, path, None, csrf=real_csrf).status == 403
    assert post(url, path, read, csrf=real_csrf).status == 403
    assert post(url, path, admin).status == 403
    assert post(url, path, admin, csrf="forged").status == 403
    other_admin = cookie_of(url, ADMIN_TOKEN)  # another session's token is not this one's
    assert post(url, path, other_admin, csrf=real_csrf).status == 403
    # A read session with its own right CSRF token (its pages show none) is still refused.
    sessions = Sessions(api_settings())
    read_session = sessions.check(read)
    assert read_session is not None
    assert post(url, path, read, csrf=sessions.csrf(read_session)).status == 403
    assert (ports.retried, ports.cancelled) == ([], [])


def test_a_read_session_sees_no_write_buttons(url: str) -> None:
    page = get(url, "/ui/jobs/sort-2", cookie_of(url, READ_TOKEN)).data.decode()
    assert 'id="retry"' not in page
    assert 'id="cancel"' not in page
    admin_page = get(url, "/ui/jobs/sort-2", cookie_of(url, ADMIN_TOKEN)).data.decode()
    assert 'id="retry"' in admin_page
    assert 'id="cancel"' in admin_page


def test_a_download_reads_only_the_jobs_own_outputs(url: str) -> None:
    cookie = cookie_of(url, READ_TOKEN)
    page = get(url, f"/ui/jobs/{A}", cookie).data.decode()
    assert f"/ui/jobs/{A}/outputs/sort-1-result.csv" in page
    answer = get(url, f"/ui/jobs/{A}/outputs/sort-1-result.csv", cookie)
    assert (answer.status, answer.data) == (200, b"a,b\n1,2\n")
    assert "attachment" in answer.headers["Content-Disposition"]
    assert get(url, f"/ui/jobs/{B}/outputs/sort-1-result.csv", cookie).status == 404


def test_a_row_fragment_is_given_only_for_a_job_on_the_lists_filters(url: str) -> None:
    cookie = cookie_of(url, READ_TOKEN)
    assert get(url, f"/ui/parts/row/{B}?state=failed", cookie).status == 200
    assert get(url, f"/ui/parts/row/{B}?state=succeeded", cookie).status == 204
    assert get(url, f"/ui/parts/row/{B}?label=team%3Dy", cookie).status == 204


def test_notices_name_the_job_and_its_state_or_the_replica() -> None:
    body = b'{"requestId": "r1", "event": "running", "jobName": "sort-1"}'
    assert notice("mstc.job.running", body) == {
        "kind": "job",
        "requestId": "r1",
        "state": "running",
        "jobName": "sort-1",
        "pipelineTask": False,
    }
    assert notice("mstc.worker.heartbeat", b'{"replica": "w-0"}') == {
        "kind": "replica",
        "replica": "w-0",
    }
    assert notice("lab.start", body) is None
    assert notice("mstc.job.running", b"not json") is None


def test_a_listener_that_falls_behind_is_dropped_and_the_others_get_every_notice() -> None:
    async def scenario() -> tuple[bool, int, bool]:
        feed = Broadcaster()
        slow, fast = feed.subscribe(), feed.subscribe()
        got = 0
        for n in range(QUEUE_SIZE + 1):
            feed.publish({"n": n})
            await asyncio.sleep(0)  # the loop runs the hand-over, as it would between events
            if await fast.next(1) is not None:
                got += 1
        drained = 0
        try:
            while await slow.next(0.1) is not None:
                drained += 1
        except EOFError:
            ended = True
        else:
            ended = False
        return slow.dropped and not fast.dropped, got, ended and drained == QUEUE_SIZE - 1

    dropped_only_slow, fast_got, slow_ended_after_its_backlog = asyncio.run(scenario())
    assert dropped_only_slow
    assert fast_got == QUEUE_SIZE + 1
    assert slow_ended_after_its_backlog


def test_close_ends_every_stream() -> None:
    async def scenario() -> bool:
        feed = Broadcaster()
        listener = feed.subscribe()
        feed.close()
        try:
            await listener.next(1)
        except EOFError:
            return feed.listeners == 0
        return False

    assert asyncio.run(scenario())
