"""Catalog sources and the keeper, against the real things: a file, a ConfigMap in the stack's
API server (KWOK), an object in the stack's MinIO.

Each source goes through the same story: load, edit (on_change gets the new catalog), a
broken edit (refused with its line; the last good catalog stays), fixed again (taken). The
keeper is driven poll by poll with `check()`, so no test waits on a timer; one test runs the
polling thread and awaits its on_change event.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from minio import Minio

from mstc_client.catalog import Catalog
from mstc_client.config import ClientConfig
from mstc_flow.catalog_source import CatalogKeeper, CatalogSource, open_source
from mstc_flow.errors import CatalogError, ConfigError, NotFound
from tests.support.stack import StackInfo

SEED_CSV = (Path(__file__).parents[1] / "client" / "catalogs" / "seed_jobs.csv").read_text()
GOOD = "entries:\n  - name: first\n    trigger: a/b\n    request: {image: 'i:1'}\n"
EDITED = GOOD + "  - name: second\n    trigger: a/+\n    request: {image: 'i:2'}\n"
BROKEN = EDITED + "  - name: third\n    request: {image: 'i:3'}\n    concurrency: often\n"
FIXED = EDITED + "  - name: third\n    request: {image: 'i:3'}\n    concurrency: skip\n"
NO_S3 = ClientConfig.from_env({})  # sources other than s3:// never use it


# --- fixtures (here, not in tests/flow/conftest.py: another part of the work owns that) ---


class Changes:
    """What on_change was given, in order; `wait_for` awaits a count from another thread."""

    def __init__(self) -> None:
        self.catalogs: list[Catalog] = []
        self._cond = threading.Condition()

    def __call__(self, catalog: Catalog) -> None:
        with self._cond:
            self.catalogs.append(catalog)
            self._cond.notify_all()

    def names(self) -> list[list[str]]:
        return [[e.name for e in catalog.entries] for catalog in self.catalogs]

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.catalogs) >= count, timeout)


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
def minio(stack: StackInfo) -> Minio:
    access, secret = stack.s3_keys
    return Minio(stack.s3_host, access_key=access, secret_key=secret, secure=False)


@pytest.fixture
def s3_bucket(minio: Minio) -> Iterator[str]:
    name = f"flow-catalog-{uuid.uuid4().hex[:10]}"
    minio.make_bucket(name)
    yield name
    for item in minio.list_objects(name, recursive=True):
        minio.remove_object(name, item.object_name)
    minio.remove_bucket(name)


def story(source: CatalogSource, write: Callable[[str], None], changes: Changes) -> None:
    """Load, edit, break, fix: what every source must do the same way."""
    keeper = CatalogKeeper(source, changes, poll_seconds=60)
    write(GOOD)
    assert keeper.check() is True
    assert keeper.check() is False  # unchanged: not read again, on_change not called
    write(EDITED)
    assert keeper.check() is True
    write(BROKEN)
    assert keeper.check() is False
    assert isinstance(keeper.last_problem, CatalogError)
    assert keeper.last_problem.line == 10
    assert keeper.last_error == (
        f"{source.name}, line 10: concurrency: 'often' is not one of allow, skip, replace"
    )
    assert keeper.current is not None
    assert [e.name for e in keeper.current.entries] == ["first", "second"]  # last good stays
    write(FIXED)
    assert keeper.check() is True
    assert keeper.last_error is None
    assert changes.names() == [["first"], ["first", "second"], ["first", "second", "third"]]
    assert changes.catalogs[-1].source == source.name


# --- a file ------------------------------------------------------------------------------


def test_a_file_catalog_is_taken_refused_and_taken_again(tmp_path: Path, changes: Changes) -> None:
    path = tmp_path / "flows.yaml"

    def write(text: str) -> None:
        path.write_text(text)

    story(open_source(f"file:{path}", NO_S3), write, changes)


def test_the_seeds_csv_loads_from_a_file_and_a_missing_file_keeps_nothing(
    tmp_path: Path, changes: Changes
) -> None:
    path = tmp_path / "jobs.csv"
    keeper = CatalogKeeper(open_source(f"file:{path}", NO_S3), changes, poll_seconds=60)
    assert keeper.check() is False
    assert isinstance(keeper.last_problem, NotFound)
    path.write_text(SEED_CSV)
    assert keeper.check() is True
    assert changes.names() == [["init-job", "processing-job"]]
    path.write_bytes(SEED_CSV.encode() + b"bad-\xff,img\n")
    assert keeper.check() is False
    assert keeper.last_error == f"file:{path}, line 4: not UTF-8 text (byte {len(SEED_CSV) + 4})"
    path.unlink()
    assert keeper.check() is False
    assert keeper.current is not None
    assert keeper.current.digest == changes.catalogs[0].digest  # the last good one stays


def test_reload_now_reads_an_unchanged_version_again(tmp_path: Path, changes: Changes) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(GOOD)
    keeper = CatalogKeeper(open_source(f"file:{path}", NO_S3), changes, poll_seconds=60)
    assert keeper.check() is True
    calls: list[str] = []
    keeper.source = _Counting(keeper.source, calls)
    assert keeper.check() is False
    assert calls == ["version"]  # a poll of an unchanged version does not read it
    assert keeper.reload_now() is False  # read, same digest: on_change not called again
    assert calls == ["version", "read"]
    assert len(changes.catalogs) == 1


def test_a_broken_version_is_refused_once_not_at_every_poll(
    tmp_path: Path, changes: Changes
) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(BROKEN)
    calls: list[str] = []
    keeper = CatalogKeeper(
        _Counting(open_source(f"file:{path}", NO_S3), calls), changes, poll_seconds=60
    )
    assert keeper.check() is False
    assert keeper.check() is False
    assert calls == ["version", "read", "version"]
    assert keeper.last_error is not None
    assert keeper.last_error.endswith(
        "line 10: concurrency: 'often' is not one of allow, skip, replace"
    )


class _Counting:
    def __init__(self, inner: CatalogSource, calls: list[str]) -> None:
        self.inner, self.calls, self.name = inner, calls, inner.name

    def version(self) -> str:
        self.calls.append("version")
        return self.inner.version()

    def read(self) -> tuple[str, str]:
        self.calls.append("read")
        return self.inner.read()


def test_the_polling_thread_takes_an_edit(tmp_path: Path, changes: Changes) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(GOOD)
    keeper = CatalogKeeper(open_source(f"file:{path}", NO_S3), changes, poll_seconds=0.05)
    keeper.start()
    try:
        assert changes.wait_for(1, timeout=10)
        path.write_text(EDITED)
        assert changes.wait_for(2, timeout=10)
    finally:
        keeper.stop()
    assert changes.names()[-1] == ["first", "second"]


def test_an_on_change_that_fails_leaves_the_version_to_be_offered_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(GOOD)
    attempts: list[Catalog] = []

    def flaky(catalog: Catalog) -> None:
        attempts.append(catalog)
        if len(attempts) == 1:
            raise RuntimeError("broker away")

    keeper = CatalogKeeper(open_source(f"file:{path}", NO_S3), flaky, poll_seconds=60)
    assert keeper.check() is False
    assert keeper.current is None
    assert "broker away" in (keeper.last_error or "")
    assert keeper.check() is True
    assert keeper.current is attempts[1]


@pytest.mark.parametrize("spec", ["", "file:", "configmap:ns", "configmap:a/b/c/d", "s3:b/o", "x"])
def test_a_spec_naming_no_source_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="MSTC_FLOW_CATALOG"):
        open_source(spec, NO_S3)


# --- a ConfigMap in the stack's API server ------------------------------------------------


@pytest.mark.stack
def test_a_configmap_catalog_is_taken_refused_and_taken_again(
    api_client: k8s.ApiClient, namespace: str, changes: Changes
) -> None:
    core = k8s.CoreV1Api(api_client)
    meta = k8s.V1ObjectMeta(name="catalog")
    core.create_namespaced_config_map(namespace, k8s.V1ConfigMap(metadata=meta, data={}))

    def write(text: str) -> None:
        body = k8s.V1ConfigMap(metadata=meta, data={"flows.yaml": text, "other": "x"})
        core.replace_namespaced_config_map("catalog", namespace, body)

    source = open_source(f"configmap:{namespace}/catalog/flows.yaml", NO_S3, kube_api=api_client)
    story(source, write, changes)
    missing = CatalogKeeper(
        open_source(f"configmap:{namespace}/nothing", NO_S3, kube_api=api_client),
        changes,
        poll_seconds=60,
    )
    assert missing.check() is False
    assert isinstance(missing.last_problem, NotFound)


# --- an object in the stack's MinIO -------------------------------------------------------


@pytest.mark.stack
def test_an_s3_catalog_is_taken_refused_and_taken_again(
    stack: StackInfo, minio: Minio, s3_bucket: str, changes: Changes
) -> None:
    def write(text: str) -> None:
        data = text.encode()
        minio.put_object(s3_bucket, "services/flows.yaml", io.BytesIO(data), len(data))

    config = ClientConfig.from_env(stack.env)
    story(open_source(f"s3://{s3_bucket}/services/flows.yaml", config), write, changes)
    gone = CatalogKeeper(
        open_source(f"s3://{s3_bucket}/services/jobs.csv", config), changes, poll_seconds=60
    )
    assert gone.check() is False
    assert isinstance(gone.last_problem, NotFound)
    data = SEED_CSV.encode()
    minio.put_object(s3_bucket, "services/jobs.csv", io.BytesIO(data), len(data))
    assert gone.check() is True
    assert changes.names()[-1] == ["init-job", "processing-job"]
