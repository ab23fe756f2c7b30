"""The REST port asked to run a Job by a caller without the token.

`POST /mstc/worker/execute` runs a Job only for a caller with the bearer token of
`MSTC_HTTP_TOKEN_FILE`. Whether a refused call made a Job anyway is counted from the API
server (tests/support/jobs_made.py), after a call with the token went all the way through,
so a refused request that had slipped into the work queue would have been run by then.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.faults.report import FaultRecord
from tests.support.jobs_made import JobsMade
from tests.worker.conftest import MakeWorker
from tests.worker.test_rest import post
from tests.worker.test_service import request

pytestmark = pytest.mark.stack


def test_execute_without_the_token_is_refused_and_makes_no_job(
    make_worker: MakeWorker, bucket: str, tmp_path: Path, jobs_made: JobsMade,
    fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = (
        "POST /mstc/worker/execute with no Authorization header, then with a wrong bearer token"
    )
    fault.expected = (
        "both refused 401 with a Bearer challenge; no Job made for them; the same request with "
        "the token runs (one Job made)"
    )
    token = secrets.token_urlsafe(32)
    token_file = tmp_path / "http-token"
    token_file.write_text(token + "\n")
    worker = make_worker(MSTC_HTTP_TOKEN_FILE=str(token_file))

    refused = [post(worker, request(bucket), given) for given in (None, "not-" + token)]
    for status, text, _ in refused:
        assert status == 401, text
    challenges = {headers["WWW-Authenticate"].split()[0] for _, _, headers in refused}
    assert challenges == {"Bearer"}
    status, text, _ = post(worker, request(bucket), token)
    assert status == 200, text
    made = jobs_made.names()
    assert made == [text.removeprefix("Job ").removesuffix(" complete.")], made
    handled = worker.metric('mstc_requests_total{outcome="succeeded"}')
    assert handled == 1

    fault.saw(
        f"without a token: {refused[0][0]}, wrong token: {refused[1][0]} (challenge "
        f"{'/'.join(sorted(challenges))}); with the token: {status} {text!r}; Jobs made: "
        f"{len(made)}; requests handled: {handled:.0f}"
    )
