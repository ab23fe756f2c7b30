"""The MinIO adapter: store a Job's log as a text object, creating the bucket when missing.

The only module that imports the minio library. It owns the S3 calls the worker makes
and the translation of their failures into the worker's error tree: an unreachable
server, 5xx and throttling are `StorageUnavailable` (retried here, bounded), a refusal
such as access denied or an invalid bucket name is `StorageRejected`. What a final
failure means is the caller's decision (the reply then says the log was not stored).

The minio client's own HTTP layer would retry 5 times with 5-minute timeouts; it is
given short timeouts and no retries instead, so tenacity is the one retry policy and a
MinIO that is down fails within seconds rather than hanging a worker thread.
"""

from __future__ import annotations

import http.client
import io
import logging

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error, ServerError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.settings import Settings

__all__ = ["Storage", "StorageRejected", "StorageUnavailable"]

log = logging.getLogger(__name__)

_ATTEMPTS = 4
# S3 error codes that say "try again later" rather than "this request is wrong".
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "OperationAborted",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "XMinioServerNotInitialized",
    }
)
_CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


class StorageUnavailable(TransientError):
    """MinIO could not be reached, or answered 5xx or "slow down"."""


class StorageRejected(PermanentError):
    """MinIO refused the request (access denied, invalid bucket name, ...)."""


def _http_client(ca_file: str | None) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3.0, read=20.0),
        retries=False,  # tenacity retries, with backoff and a log line per attempt
        maxsize=10,
        # MSTC_TLS_CA_FILE for a private CA, else the system's store; always verified.
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_file,
    )


def _translate(what: str, exc: Exception) -> TransientError | PermanentError:
    """The worker's error for a minio or network exception."""
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else 0
        transient = exc.code in _TRANSIENT_CODES or status == 429 or status >= 500
        text = f"{what}: {exc.code}: {exc.message}"
    elif isinstance(exc, ServerError):
        transient = exc.status_code >= 500
        text = f"{what}: MinIO answered HTTP {exc.status_code}"
    elif isinstance(exc, ValueError):
        # The minio client checks names itself before sending anything.
        transient, text = False, f"{what}: {exc}"
    else:
        # Unreachable, or not S3's XML (InvalidResponseError): typically a proxy in front
        # of MinIO answering while MinIO is away.
        transient, text = True, f"{what}: cannot reach MinIO: {exc}"
    return StorageUnavailable(text) if transient else StorageRejected(text)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("minio: attempt %d failed, retrying: %s", state.attempt_number, exc)


class Storage:
    """Writes objects to the MinIO the settings name, with the worker's own credentials."""

    def __init__(self, settings: Settings, *, client: Minio | None = None) -> None:
        self._client = client or Minio(
            settings.s3_endpoint,
            access_key=settings.minio_root_user,
            secret_key=settings.minio_root_password.get_secret_value(),
            secure=settings.s3_secure,
            http_client=_http_client(str(settings.tls_ca_file) if settings.tls_ca_file else None),
        )
        self._retrying = Retrying(
            retry=retry_if_exception_type(StorageUnavailable),
            stop=stop_after_attempt(_ATTEMPTS),
            # 0.5 s doubling to 4 s, jittered: 4 attempts fail within ~5 s plus timeouts.
            wait=wait_exponential(multiplier=0.5, max=4.0) + wait_random(0, 0.25),
            before_sleep=_log_retry,
            reraise=True,
        )

    def put_text(self, bucket: str, object_name: str, text: str) -> None:
        """Store `text` (UTF-8, text/plain) as `bucket/object_name`, creating the bucket if needed.

        Raises StorageUnavailable once the retries are spent, StorageRejected at once.
        """
        data = text.encode("utf-8")
        what = f"store {bucket}/{object_name}"

        def attempt() -> None:
            try:
                self._put(bucket, object_name, data)
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                # Put first, create on demand: the common case (bucket exists) costs one call.
                self._make_bucket(bucket)
                self._put(bucket, object_name, data)

        def translated() -> None:
            try:
                attempt()
            except (MinioException, ValueError, *_CONNECTION_ERRORS) as exc:
                raise _translate(what, exc) from exc

        self._retrying(translated)

    def _put(self, bucket: str, object_name: str, data: bytes) -> None:
        self._client.put_object(
            bucket,
            object_name,
            io.BytesIO(data),
            length=len(data),
            content_type="text/plain; charset=utf-8",
        )

    def _make_bucket(self, bucket: str) -> None:
        try:
            self._client.make_bucket(bucket)
        except S3Error as exc:
            # Another worker storing a log in the same bucket may have just created it.
            if exc.code != "BucketAlreadyOwnedByYou":
                raise
