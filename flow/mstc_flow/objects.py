"""The flow service's S3 boundary: reading one object (the catalog, a log, a Job's output) and
its ETag from MinIO/S3, and listing a Job's outputs by their name prefix.

The MQTT job listener's users keep jobs.csv in a bucket, so a catalog may live there. The
minio client is built by `mstc_client.storage.default_minio` from the same settings the
worker and the `mstc` command read (short timeouts, few retries); only this module calls it
and knows its exceptions, which it turns into the flow's error tree: a missing bucket or
object is `NotFound`, a refused key `PermanentError`, anything else (down, slow, 5xx)
`TransientError`. The catalog keeper treats all three alike (keep the last good catalog,
try again next poll); the class only changes what the log says.
"""

from __future__ import annotations

from typing import Any

import urllib3
from minio.error import MinioException, S3Error

from mstc_client.config import ClientConfig
from mstc_client.storage import default_minio
from mstc_flow.errors import FlowError, NotFound, PermanentError, TransientError

__all__ = ["ObjectReader"]

_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})
_REFUSED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


class ObjectReader:
    """Reads whole small objects (with a size bound) and their ETags from one endpoint."""

    def __init__(self, config: ClientConfig, minio: Any = None) -> None:
        self._endpoint = config.s3_endpoint
        self._minio = minio if minio is not None else default_minio(config)

    def etag(self, bucket: str, name: str) -> str:
        """The object's ETag: it changes whenever the object's content does."""
        stat = self._call(bucket, name, lambda: self._minio.stat_object(bucket, name))
        return str(stat.etag)

    def read(self, bucket: str, name: str, *, max_bytes: int) -> tuple[bytes, str]:
        """(at most `max_bytes` + 1 bytes of the object, the ETag of what was read)."""

        def get() -> tuple[bytes, str]:
            response = self._minio.get_object(bucket, name)
            try:
                data = response.read(max_bytes + 1)  # one byte more shows it is too big
                return bytes(data), str(response.headers.get("ETag", "")).strip('"')
            finally:
                response.close()
                response.release_conn()

        result: tuple[bytes, str] = self._call(bucket, name, get)
        return result

    def list(self, bucket: str, prefix: str, *, limit: int) -> list[tuple[str, int]]:
        """(name, size) of at most `limit` objects whose names start with `prefix`, by name."""

        def names() -> list[tuple[str, int]]:
            found: list[tuple[str, int]] = []
            for item in self._minio.list_objects(bucket, prefix=prefix, recursive=True):
                if len(found) >= limit:
                    break
                found.append((str(item.object_name), int(item.size or 0)))
            return found

        result: list[tuple[str, int]] = self._call(bucket, prefix + "*", names)
        return result

    def _call(self, bucket: str, name: str, action: Any) -> Any:
        where = f"s3://{bucket}/{name} at {self._endpoint}"
        try:
            return action()
        except S3Error as exc:
            raise _s3_error(exc, where) from exc
        except MinioException as exc:
            raise TransientError(f"MinIO answered oddly for {where}: {exc}; retrying.") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(
                f"Cannot reach MinIO for {where} ({type(exc).__name__}); retrying."
            ) from exc


def _s3_error(exc: S3Error, where: str) -> FlowError:
    if exc.code in _MISSING:
        return NotFound(f"{where} does not exist ({exc.code}); upload the catalog there.")
    if exc.code in _REFUSED:
        return PermanentError(
            f"MinIO refused the key for {where} ({exc.code}); check MSTC_S3_ACCESS_KEY/"
            "MSTC_S3_SECRET_KEY and that its user may read the bucket."
        )
    return TransientError(f"MinIO failed to serve {where} ({exc.code}); retrying.")
