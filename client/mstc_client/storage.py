"""The MinIO side of the client: object names for a run, uploads and downloads with progress.

Naming follows the Java convention that every tool of the system already relies on: the inputs
and outputs of one run share an object-name prefix (the request's `prefix`), files live under
`<prefix>/<relative path>`, and the worker stores the Job's log as `<prefix>-<job name>.log`.
A file given as an input keeps its base name; a directory given as an input contributes its
*contents*, each under its path relative to that directory, so `--input data/` puts
`data/a/b.txt` at `<prefix>/a/b.txt`. Two inputs that would land on the same name are refused
before anything is uploaded.

Downloads bring back every object whose name starts with the prefix (outputs and the log),
except inputs this client uploaded and that are unchanged (same ETag), and write each file
atomically (a temporary name, then a rename) so a broken download never looks complete.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import urllib3
from minio import Minio
from minio.error import MinioException

from mstc_client.config import ClientConfig
from mstc_client.errors import InputError, StorageError, StorageUnreachable

__all__ = [
    "Progress",
    "ProgressCallback",
    "Storage",
    "Uploaded",
    "input_files",
    "local_path_for",
    "new_prefix",
]

log = logging.getLogger(__name__)
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Progress:
    """A transfer's progress, reported after every chunk and once per finished file."""

    stage: Literal["upload", "download"]
    name: str
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class Uploaded:
    path: Path
    key: str
    size: int
    etag: str


def new_prefix() -> str:
    """A fresh prefix for one run: short enough to read, random enough never to collide."""
    return f"run-{uuid.uuid4().hex[:8]}"


def input_files(paths: Iterable[Path], prefix: str) -> list[tuple[Path, str]]:
    """Each local file to upload with its object name (see the module docstring for the rule)."""
    pairs: list[tuple[Path, str]] = []
    seen: dict[str, Path] = {}
    for given in paths:
        if given.is_dir():
            found = sorted(
                Path(root) / name
                for root, _dirs, names in os.walk(given, followlinks=False)
                for name in names
            )
            files = [(path, path.relative_to(given).as_posix()) for path in found]
        elif given.is_file():
            files = [(given, given.name)]
        else:
            raise InputError(f"Input {str(given)!r} does not exist or is not a file or directory.")
        for path, relative in files:
            key = f"{prefix}/{relative}"
            if key in seen:
                raise InputError(
                    f"Inputs {str(seen[key])!r} and {str(path)!r} would both be stored as "
                    f"{key!r}; rename one or pass their parent directory instead."
                )
            seen[key] = path
            pairs.append((path, key))
    return pairs


def local_path_for(key: str, prefix: str, output_dir: Path) -> Path | None:
    """Where object `key` of a run goes under `output_dir`; None for names that would escape it.

    `<prefix>/a/b` becomes `output_dir/a/b`; other names starting with the prefix (the log,
    `<prefix>-<job>.log`) keep their whole name.
    """
    relative = key[len(prefix) + 1 :] if key.startswith(prefix + "/") else key
    # Split by hand: PurePosixPath would quietly fold "a//b" and "./a", hiding clashes.
    parts = relative.split("/")
    if "\\" in relative or any(part in ("", ".", "..") for part in parts):
        return None  # also catches absolute names and directory markers (empty parts)
    return output_dir.joinpath(*parts)


def default_minio(config: ClientConfig) -> Any:
    # Short connect timeout and few retries: minio's defaults wait minutes on a dead endpoint.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=120),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        config.s3_endpoint,
        access_key=config.s3_access_key,
        secret_key=config.s3_secret_key,
        secure=config.s3_secure,
        http_client=http,
    )


class _Counting:
    """A file reader that reports how many bytes were read (minio reads with `read(n)`)."""

    def __init__(self, file: Any, report: Callable[[int], None]) -> None:
        self._file = file
        self._report = report

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._file.read(size)
        if data:
            self._report(len(data))
        return data


class Storage:
    """Uploads and downloads for runs, over one minio client (thread-safe, as minio's is)."""

    def __init__(self, config: ClientConfig, minio: Any = None) -> None:
        self._config = config
        self.minio = minio if minio is not None else default_minio(config)

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        """Run one storage call, turning library errors into the client's, with advice."""
        where = self._config.s3_endpoint
        try:
            return action()
        except MinioException as exc:
            raise StorageError(
                f"MinIO at {where} refused to {what}: {exc}. Check the key (MSTC_S3_ACCESS_KEY/"
                "MSTC_S3_SECRET_KEY or MINIO_ROOT_USER/MINIO_ROOT_PASSWORD), that its user may "
                "use this bucket, and the bucket name."
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if isinstance(exc, OSError) and exc.filename is not None:
                raise InputError(f"Cannot {what}: {exc}") from exc
            raise StorageUnreachable(
                f"Cannot reach MinIO at {where} to {what} ({type(exc).__name__}). Check that it "
                "runs and that MSTC_S3_ENDPOINT or MINIO_SERVICE_HOST/MINIO_SERVICE_PORT point "
                "at it."
            ) from exc

    def ensure_bucket(self, bucket: str) -> None:
        if not self._call(f"look up bucket {bucket!r}", lambda: self.minio.bucket_exists(bucket)):
            self._call(f"create bucket {bucket!r}", lambda: self.minio.make_bucket(bucket))

    def upload(
        self,
        files: Sequence[tuple[Path, str]],
        bucket: str,
        progress: ProgressCallback | None = None,
    ) -> list[Uploaded]:
        sizes = [path.stat().st_size for path, _key in files]
        total, done = sum(sizes), 0
        uploaded: list[Uploaded] = []

        def step(count: int, name: str) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(Progress("upload", name, done, total, len(uploaded), len(files)))

        for (path, key), size in zip(files, sizes, strict=True):
            with path.open("rb") as file:
                reader = _Counting(file, lambda n, key=key: step(n, key))  # type: ignore[misc]
                written = self._call(
                    f"upload {key!r} to bucket {bucket!r}",
                    lambda: self.minio.put_object(bucket, key, reader, size),  # noqa: B023
                )
            uploaded.append(Uploaded(path, key, size, str(written.etag).strip('"')))
            step(0, key)
        return uploaded

    def download(
        self,
        bucket: str,
        prefix: str,
        output_dir: Path,
        *,
        unchanged: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Path]:
        """Every object of `bucket` starting with `prefix`, into `output_dir`; local paths back.

        `unchanged` maps object names to ETags to leave out (the inputs, as uploaded).
        """
        unchanged = unchanged or {}
        listing = self._call(
            f"list bucket {bucket!r}",
            lambda: list(self.minio.list_objects(bucket, prefix=prefix, recursive=True)),
        )
        wanted: list[tuple[str, Path, int]] = []
        for obj in listing:
            key = str(obj.object_name)
            if unchanged.get(key) == str(obj.etag).strip('"'):
                continue
            target = local_path_for(key, prefix, output_dir)
            if target is None:
                log.warning("not downloading %r: its name would leave %s", key, output_dir)
                continue
            wanted.append((key, target, int(obj.size or 0)))
        total, done = sum(size for _k, _t, size in wanted), 0
        paths: list[Path] = []

        def step(count: int, key: str) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(Progress("download", key, done, total, len(paths), len(wanted)))

        for key, target, _size in wanted:
            self._call(
                f"download {key!r} from bucket {bucket!r}",
                lambda key=key, target=target: self._fetch(  # type: ignore[misc]
                    bucket, key, target, lambda n: step(n, key)
                ),
            )
            paths.append(target)
            step(0, key)
        return paths

    def _fetch(self, bucket: str, key: str, target: Path, step: Callable[[int], None]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        response = None
        try:
            with os.fdopen(fd, "wb") as out:
                response = self.minio.get_object(bucket, key)
                for chunk in response.stream(_CHUNK):
                    out.write(chunk)
                    step(len(chunk))
            os.replace(temp, target)
        finally:
            Path(temp).unlink(missing_ok=True)
            if response is not None:
                response.close()
                response.release_conn()
