"""The clients' MinIO user: `mstc` works with its key, which is not MinIO's root key.

The user is made the way the chart's post-install hook makes it (`storage.add_client_user`,
signed with the stack's root key), on the stack's real MinIO. The local stack's script cannot
make it itself (it uses Python's standard library only, and MinIO's admin payloads are
encrypted), so this fixture does, as the chart's hook does in a cluster.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from minio import Minio
from minio.credentials.providers import StaticProvider
from minio.error import MinioAdminException, S3Error
from minio.minioadmin import MinioAdmin

from mstc_worker.settings import load_settings
from mstc_worker.storage import add_client_user
from tests.client.conftest import run_mstc
from tests.support.stack import StackInfo
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.stack

CLIENT_KEY = ("mstc-client", "mstc-client-local-secret")


@pytest.fixture
def client_user(stack: StackInfo) -> tuple[str, str]:
    add_client_user(load_settings(stack.env), *CLIENT_KEY)
    return CLIENT_KEY


def test_mstc_runs_with_the_client_users_key(
    worker: WorkerProcess, client_env: dict[str, str], client_user: tuple[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    env = {
        k: v for k, v in client_env.items() if k not in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
    }
    env["MSTC_S3_ACCESS_KEY"], env["MSTC_S3_SECRET_KEY"] = client_user
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_bytes(b"3 1 2\n")
    out = run_mstc(
        "run", "--image", "example.invalid/job:1", "--job-name", "client-user", "--input", "data",
        "--output-dir", "out", "--timeout", "2", "--json", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded"
    assert (tmp_path / result["log"]).stat().st_size > 0  # the worker's log, read back


def test_the_client_users_key_makes_no_admin_call(
    stack: StackInfo, client_user: tuple[str, str]
) -> None:
    admin = MinioAdmin(
        endpoint=stack.s3_host, credentials=StaticProvider(*client_user), secure=False
    )
    with pytest.raises(MinioAdminException) as caught:
        admin.user_add("intruder", "intruder-secret-1")
    assert caught.value._code == "403"


def test_the_client_users_key_cannot_read_the_workers_reply_records(
    stack: StackInfo, client_user: tuple[str, str]
) -> None:
    settings = load_settings(stack.env)
    own = settings.reply_records_bucket
    root = Minio(stack.s3_host, access_key=stack.s3_keys[0], secret_key=stack.s3_keys[1],
                 secure=False)  # fmt: skip
    if not root.bucket_exists(own):
        root.make_bucket(own)
    root.put_object(own, "replies/probe.json", io.BytesIO(b"{}"), length=2)
    client = Minio(stack.s3_host, access_key=client_user[0], secret_key=client_user[1],
                   secure=False)  # fmt: skip
    with pytest.raises(S3Error) as caught:
        client.get_object(own, "replies/probe.json")
    assert caught.value.code == "AccessDenied"
    with pytest.raises(S3Error) as listed:
        list(client.list_objects(own, prefix="replies/"))
    assert listed.value.code == "AccessDenied"
