"""Issue 19's dashboard in a real browser (Debian's headless Chromium, driven by selenium)
against the real stack: the installed `mstc-flow` script, a real worker on the KWOK cluster.

A Job fired by the test appears in the open jobs list and turns succeeded there without a
reload (a MutationObserver in the page resolves when the row says so; a marker set on the page
before proves it was never reloaded); retry from the job page makes a second Job, counted on
the Kubernetes API server; an open list goes on updating after the flow restarts; a read
session shows no write buttons, and no session, a read session or a forged form is refused
403 and makes no Job; a plain HTTP GET with the cookie (no JavaScript) returns the rows; the
job's outputs download through the flow from the bucket, and no other object of it does. The
tests save docs/screenshots/overview.png and job.png from the run. One browser serves the
module; the flows and workers are each test's own.
"""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from kubernetes import client as k8s
from minio import Minio
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.flow.flow_process import (  # noqa: F401  (fixtures, found by pytest by name)
    ADMIN_TOKEN,
    READ_TOKEN,
    MakeRealFlow,
    RealFlow,
    flow_queues,
    make_real_flow,
    start_with_worker,
)
from tests.flow.test_engine_stack import firings_of, job_env, jobs_of, name, wait_job
from tests.flow.test_flow_done_when_ops import write_catalog
from tests.support.kube import RUN_FOR, watch_until
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    MakeWorker,
    bucket,
    make_worker,
    minio,
    minio_secret,
    work_queue,
)

pytestmark = pytest.mark.stack

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"
KEEP_JOBS = {"MSTC_JOB_TTL_SECONDS": "600"}  # the Jobs stay to be counted
COOKIE = "mstc_flow_session"

# Resolves once a row of the jobs list names `entry` in state `state` (rows with `known` ids
# aside); meanwhile records the states the row showed. Runs in the page: the wait is on the
# DOM's own change events.
AWAIT_ROW = """
const [entry, state, known] = [arguments[0], arguments[1], arguments[2]];
const done = arguments[arguments.length - 1];
const rows = document.getElementById("job-rows");
window.seenStates = [];
function check() {
  for (const row of rows.querySelectorAll("tr")) {
    if (!row.textContent.includes(entry) || known.includes(row.id)) continue;
    const shown = row.querySelector(".state").textContent;
    if (window.seenStates[window.seenStates.length - 1] !== shown) window.seenStates.push(shown);
    if (shown === state) { observer.disconnect(); done(row.id); return true; }
  }
  return false;
}
const observer = new MutationObserver(check);
if (!check()) observer.observe(rows, {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [str(p) for p in (CHROMIUM, DRIVER) if not p.exists()]
    assert not missing, f"{missing} not installed: run `make stack-deps` (Debian chromium)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))
    driver.set_script_timeout(60)  # a Job of the stack ends in seconds
    yield driver
    driver.quit()


def browser_login(driver: webdriver.Chrome, flow: RealFlow, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(flow.url + "/ui/login")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    field.submit()
    WebDriverWait(driver, 10).until(lambda d: d.current_url == flow.url + "/ui/")


def session_cookie(flow: RealFlow, token: str) -> str:
    """Log in over plain HTTP; the session cookie's value."""
    request = urllib.request.Request(flow.url + "/ui/login", method="POST",
                                     data=urlencode({"token": token}).encode())  # fmt: skip
    try:
        urllib.request.build_opener(_NoRedirect).open(request, timeout=10)
    except urllib.error.HTTPError as redirect:  # not followed: its headers are the answer
        answer = redirect
    else:
        raise AssertionError("login did not redirect")
    match = re.match(rf"{COOKIE}=([^;]+)", answer.headers.get("Set-Cookie", ""))
    assert answer.code == 303
    assert match is not None, answer.headers
    return match.group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http(flow: RealFlow, method: str, path: str, cookie: str | None,
         form: dict[str, str] | None = None) -> tuple[int, str]:  # fmt: skip
    """One request with the session cookie (no JavaScript, no redirects followed)."""
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    data = urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(flow.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read().decode()


def fire(flow: RealFlow, entry: str) -> None:
    status, answer = flow.post(f"/api/v1/catalog/{entry}/fire")
    assert status == 202, answer


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / name))


def test_a_fired_job_appears_and_succeeds_live_retry_makes_a_second_job_and_restarts_are_survived(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path, browser: webdriver.Chrome,
) -> None:  # fmt: skip
    entry = name()
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [(entry, f"lab/{entry}",
                                                                 {RUN_FOR: "2s"})])  # fmt: skip
    flow = start_with_worker(make_worker, make_real_flow, KEEP_JOBS, MSTC_FLOW_CATALOG=catalog)
    browser_login(browser, flow, ADMIN_TOKEN)
    browser.get(flow.url + "/ui/jobs")
    browser.execute_script("window.notReloaded = true;")
    fire(flow, entry)
    row_id = browser.execute_async_script(AWAIT_ROW, entry, "succeeded", [])
    seen = browser.execute_script("return window.seenStates;")
    assert browser.execute_script("return window.notReloaded === true;"), "the page reloaded"
    assert seen[0] != "succeeded", seen  # the row was there before it succeeded ...
    assert seen[-1] == "succeeded", seen  # ... and changed in place
    first = wait_job(api_client, namespace, entry)

    browser.get(flow.url + "/ui/")
    screenshot(browser, "overview.png")
    browser.get(flow.url + "/ui/jobs/" + row_id.removeprefix("job-"))
    assert browser.find_element(By.ID, "job-state").text == "succeeded"
    browser.find_element(By.TAG_NAME, "pre")  # the log or the request, shown
    screenshot(browser, "job.png")

    browser.find_element(By.ID, "retry").click()
    notice = WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CLASS_NAME, "notice"))
    assert "Sent again as firing" in notice[0].text
    watch_until(k8s.BatchV1Api(api_client).list_namespaced_job,
                lambda _kind, job: job_env(job).get("MSTC_FLOW_ENTRY") == entry
                and job.metadata.name != first.metadata.name,
                timeout=60, namespace=namespace)  # fmt: skip
    assert len(jobs_of(api_client, namespace, entry)) == 2

    # The flow restarts under an open list: the page reconnects and goes on updating.
    browser.get(flow.url + "/ui/jobs")
    browser.execute_script("window.notReloaded = true;")
    known = [
        row.get_attribute("id") for row in browser.find_elements(By.CSS_SELECTOR, "#job-rows tr")
    ]
    flow.stop()
    flow.start()
    fire(flow, entry)
    browser.execute_async_script(AWAIT_ROW, entry, "succeeded", known)
    assert browser.execute_script("return window.notReloaded === true;"), "the page reloaded"


def test_read_sessions_no_session_and_forged_forms_cannot_write_and_pages_read_without_js(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str, minio: Minio,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path, browser: webdriver.Chrome,
) -> None:  # fmt: skip
    entry = name()
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [(entry, f"lab/{entry}", {})])
    flow = start_with_worker(make_worker, make_real_flow, KEEP_JOBS, MSTC_FLOW_CATALOG=catalog)
    fire(flow, entry)
    job = wait_job(api_client, namespace, entry)
    done = flow.poll(f"/api/v1/jobs/{job.metadata.name}", lambda j: j["state"] == "succeeded")
    key = done["requestId"]

    read, admin = session_cookie(flow, READ_TOKEN), session_cookie(flow, ADMIN_TOKEN)
    status, listing = http(flow, "GET", "/ui/jobs", read)  # what a browser without JS gets
    assert status == 200
    assert f'id="job-{key}"' in listing
    assert "succeeded" in listing
    status, page = http(flow, "GET", f"/ui/jobs/{key}", admin)
    real_csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert status == 200
    assert real_csrf is not None

    # The job's outputs come through the flow from the bucket, and nothing else of it does.
    output = f"run-1-{job.metadata.name}.log"
    assert f"/ui/jobs/{key}/outputs/{output}" in page
    assert http(flow, "GET", f"/ui/jobs/{key}/outputs/{output}", read) == (200, flow.get(
        f"/api/v1/jobs/{key}/log", token=READ_TOKEN)[1])  # fmt: skip
    minio.put_object(bucket, "not-an-output.txt", io.BytesIO(b"secret"), 6)
    assert http(flow, "GET", f"/ui/jobs/{key}/outputs/not-an-output.txt", read)[0] == 404

    browser_login(browser, flow, READ_TOKEN)
    browser.get(flow.url + f"/ui/jobs/{key}")
    assert browser.find_element(By.ID, "job-state").text == "succeeded"
    assert not browser.find_elements(By.ID, "retry")
    assert not browser.find_elements(By.ID, "cancel")

    for action in ("retry", "cancel"):
        path = f"/ui/jobs/{key}/{action}"
        assert http(flow, "POST", path, None, {"csrf": real_csrf.group(1)})[0] == 403
        assert http(flow, "POST", path, read, {"csrf": real_csrf.group(1)})[0] == 403
        assert http(flow, "POST", path, admin, {"csrf": "forged"})[0] == 403
        assert http(flow, "POST", path, admin, {})[0] == 403
    # Nothing was sent: the flow's store holds only the first firing (a retry records its
    # firing before answering), and the API server only the first Job.
    assert len(firings_of(f"sqlite:///{tmp_path / 'flow.sqlite3'}", entry)) == 1
    assert [j.metadata.name for j in jobs_of(api_client, namespace, entry)] == [job.metadata.name]
