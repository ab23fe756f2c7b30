"""Issue 19's pipeline page and flags in a real browser (Debian's headless Chromium, selenium)
against the real stack: the installed `mstc-flow`, a real worker making Jobs on KWOK.

A 3-stage pipeline with one failing task (it asks more pods at once than the worker's
MSTC_MAX_PARALLELISM: rejected, no Job; see tests/flow/test_pipeline_stack.py) is drawn with each
task in its stage's column, coloured by the state the API gives it; a read session sees no buttons
and its (or a forged) POST is refused 403 with nothing retried; an admin's "Retry failed" from the
page, once a worker with a higher bound took over, reruns the failed and skipped tasks and the open
page turns every node succeeded without a reload (a MutationObserver in the page resolves when it
does). A Job held pending by the stack's waiting-reason annotation shows its `pending` flag on the
jobs list and in the overview's flagged section; a worker replica killed with SIGKILL shows as
`quiet-replica` there. Saves docs/screenshots/pipeline.png from the run. One browser for the
module; each test its own flow and workers.
"""

from __future__ import annotations

import re
import signal
import uuid
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mstc_flow.web.graph import COLUMN_GAP, MARGIN, NODE_WIDTH
from tests.flow.flow_process import (  # noqa: F401  (fixtures, found by pytest by name)
    ADMIN_TOKEN,
    READ_TOKEN,
    MakeRealFlow,
    flow_queues,
    make_real_flow,
    start_with_worker,
)
from tests.flow.test_dashboard import (  # noqa: F401  (the browser fixture, by name)
    browser,
    browser_login,
    http,
    screenshot,
    session_cookie,
)
from tests.flow.test_engine_stack import name
from tests.flow.test_flow_done_when_ops import write_catalog
from tests.flow.test_flow_flags import BEAT_SECONDS, FAST_SCAN, REPLICA, flagged
from tests.flow.test_pipeline_stack import FLOW_ENV, WORKER_ENV, submit, wait_ended
from tests.support.kube import WAITING_REASON
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    MakeWorker,
    bucket,
    make_worker,
    minio,
    minio_secret,
    work_queue,
)

pytestmark = pytest.mark.stack

# Resolves once every node of the page's graph shows `state` (the live part is replaced as a
# whole, so the observer watches its container); the wait is on the DOM's own change events.
AWAIT_GRAPH = """
const [state, done] = [arguments[0], arguments[arguments.length - 1]];
const live = document.getElementById("pipeline-live");
function check() {
  const nodes = live.querySelectorAll("g.node");
  if (nodes.length && [...nodes].every(n => n.getAttribute("data-state") === state)) {
    observer.disconnect(); done(nodes.length); return true;
  }
  return false;
}
const observer = new MutationObserver(check);
if (!check()) observer.observe(live, {childList: true, subtree: true});
"""


def graph_of(driver: webdriver.Chrome) -> dict[str, tuple[str, int]]:
    """Each drawn task's state and the x of its box (its stage's column)."""
    shown = {}
    for node in driver.find_elements(By.CSS_SELECTOR, "#pipeline-graph g.node"):
        box = node.find_element(By.TAG_NAME, "rect")
        shown[node.get_attribute("data-task") or ""] = (
            node.get_attribute("data-state") or "",
            int(box.get_attribute("x") or -1),
        )
    return shown  # fmt: skip


def column(stage: int) -> int:
    return MARGIN + stage * (NODE_WIDTH + COLUMN_GAP)


def test_the_graph_shows_task_states_read_sessions_cannot_write_and_retry_failed_reruns(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    browser: webdriver.Chrome,  # noqa: F811
) -> None:  # fmt: skip
    worker = make_worker(start=False, **WORKER_ENV)
    worker.start(wait_ready=False)
    flow = make_real_flow(MSTC_BUCKET=bucket, **FLOW_ENV)
    worker.wait_ready()
    document = {
        "name": f"p{uuid.uuid4().hex[:8]}", "parallelism": 4,
        "defaults": {"image": "example.invalid/job:1", "timeOut": 2},
        "tasks": [
            {"name": "extract"},
            {"name": "wide", "after": ["extract"], "parallelism": 12, "completions": 12},
            {"name": "clean", "after": ["extract"]},
            {"name": "report", "after": ["wide", "clean"]},
        ],
    }  # fmt: skip
    pipeline_id = submit(flow, document)["id"]
    assert wait_ended(flow, pipeline_id)["state"] == "failed"
    page = f"/ui/pipelines/{pipeline_id}"

    browser_login(browser, flow, READ_TOKEN)
    browser.get(flow.url + page)
    assert graph_of(browser) == {
        "extract": ("succeeded", column(0)), "wide": ("failed", column(1)),
        "clean": ("succeeded", column(1)), "report": ("skipped", column(2)),
    }  # fmt: skip
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pipeline-graph path.edge")) == 4
    assert not browser.find_elements(By.ID, "retry-failed")
    failed_row = browser.find_element(By.CSS_SELECTOR, 'tr[data-task="wide"]').text
    assert "MSTC_MAX_PARALLELISM" in failed_row
    screenshot(browser, "pipeline.png")

    read, admin = session_cookie(flow, READ_TOKEN), session_cookie(flow, ADMIN_TOKEN)
    found = re.search(r'name="csrf" value="([^"]+)"', http(flow, "GET", page, admin)[1])
    assert found is not None
    for cookie, csrf in ((read, found.group(1)), (None, found.group(1)), (admin, "forged")):
        assert http(flow, "POST", page + "/retry", cookie, {"csrf": csrf})[0] == 403
    status, unchanged = flow.get(f"/api/v1/pipelines/{pipeline_id}", token=READ_TOKEN)
    assert (status, unchanged["state"]) == (200, "failed")  # nothing was retried

    # The operator raises the bound (a new worker; the old one goes), then retries from the page.
    raised = make_worker(start=False, MSTC_MAX_PARALLELISM="20", **WORKER_ENV)
    raised.start(wait_ready=False)
    worker.stop()
    raised.wait_ready()
    browser_login(browser, flow, ADMIN_TOKEN)
    browser.get(flow.url + page)
    browser.find_element(By.ID, "retry-failed").click()
    notice = WebDriverWait(browser, 10).until(
        lambda d: d.find_elements(By.CLASS_NAME, "notice"))[0].text  # fmt: skip
    assert "wide" in notice
    assert "report" in notice
    browser.execute_script("window.notReloaded = true;")
    assert browser.execute_async_script(AWAIT_GRAPH, "succeeded") == 4
    assert browser.execute_script("return window.notReloaded === true;"), "the page reloaded"
    done = wait_ended(flow, pipeline_id)
    attempts = {task["name"]: task["attempts"] for task in done["tasks"]}
    assert (done["state"], attempts) == (
        "succeeded", {"extract": 1, "wide": 2, "clean": 1, "report": 1})  # fmt: skip


def test_a_job_held_pending_shows_its_flag_on_the_jobs_list_and_the_overview(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    tmp_path: Path, browser: webdriver.Chrome,  # noqa: F811
) -> None:  # fmt: skip
    entry = name()
    held = {WAITING_REASON: "ContainerCreating"}  # not a fail-fast reason: the pod just waits
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [(entry, f"lab/{entry}", held)])
    flow = start_with_worker(
        make_worker, make_real_flow, {}, MSTC_FLOW_CATALOG=catalog,
        MSTC_FLOW_PENDING_FLAG_SECONDS="2", MSTC_FLOW_STALL_SCAN_SECONDS="0.2",
    )  # fmt: skip
    status, answer = flow.post(f"/api/v1/catalog/{entry}/fire")
    assert status == 202, answer
    job = flow.poll(f"/api/v1/jobs?name={entry}", lambda page: page["items"])["items"][0]
    key = job["requestId"]
    flow.poll("/api/v1/flags",
              lambda a: any(f["subject"] == key for f in a["items"]), timeout=30)  # fmt: skip

    browser_login(browser, flow, READ_TOKEN)
    browser.get(flow.url + "/ui/jobs")
    row = browser.find_element(By.ID, f"job-{key}")
    flag = row.find_element(By.CSS_SELECTOR, '[data-flag="pending"]')
    assert flag.text.startswith("pending since ")
    browser.get(flow.url + "/ui/")
    item = browser.find_element(By.CSS_SELECTOR, '.flags li[data-flag="pending"]')
    assert "accepted, without a running pod after 2 s" in item.text
    assert " since " in item.text
    link = item.find_element(By.TAG_NAME, "a").get_attribute("href") or ""
    assert link.endswith(f"/ui/jobs/{key}")
    assert flow.mstc("jobs", "cancel", key).returncode == 0  # the held pod goes


def test_a_killed_worker_replica_is_flagged_quiet_on_the_overview(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, browser: webdriver.Chrome,  # noqa: F811
) -> None:  # fmt: skip
    beats = {"MSTC_REPLICA_HEARTBEAT_SECONDS": str(BEAT_SECONDS)}
    worker = make_worker(start=False, **beats)
    worker.start(wait_ready=False)
    flow = make_real_flow(**FAST_SCAN)
    worker.wait_ready()
    flow.poll("/api/v1/replicas", lambda a: any(r["replica"] == REPLICA for r in a["items"]))
    browser_login(browser, flow, READ_TOKEN)
    browser.get(flow.url + "/ui/")
    assert not browser.find_elements(By.CSS_SELECTOR, '.flags li[data-flag="quiet-replica"]')

    worker.signal(signal.SIGKILL)
    worker.wait()
    flow.poll("/api/v1/flags", flagged("quiet-replica", REPLICA), timeout=30)
    # A dead replica sends nothing the page could hear: the page is read again, as a person
    # coming back to it would.
    browser.get(flow.url + "/ui/")
    item = browser.find_element(By.CSS_SELECTOR, '.flags li[data-flag="quiet-replica"]')
    assert REPLICA in item.text
    assert " since " in item.text
