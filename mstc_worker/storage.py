"""The MinIO adapter: store a Job's log as a text object, creating the bucket when missing.

Also keeps small private objects for the worker itself (its reply records, see `replies`):
in a bucket of its own, made on first use with a lifecycle rule that expires them.

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
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.credentials.providers import AssumeRoleProvider, StaticProvider
from minio.error import MinioAdminException, MinioException, S3Error, ServerError
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from minio.minioadmin import MinioAdmin
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

__all__ = [
    "CLIENT_POLICY",
    "CLIENT_POLICY_NAME",
    "Storage",
    "StorageRejected",
    "StorageUnavailable",
    "TemporaryCredentials",
    "add_client_user",
    "client_policy",
]

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
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket"})


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
        self._settings = settings
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

    def _put(
        self,
        bucket: str,
        object_name: str,
        data: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        self._client.put_object(
            bucket, object_name, io.BytesIO(data), length=len(data), content_type=content_type
        )

    def _make_bucket(self, bucket: str) -> None:
        try:
            self._client.make_bucket(bucket)
        except S3Error as exc:
            # Another worker storing a log in the same bucket may have just created it.
            if exc.code != "BucketAlreadyOwnedByYou":
                raise

    # --- the worker's own objects -----------------------------------------------------------

    def put_private(self, bucket: str, object_name: str, data: bytes, *, expire_days: int) -> None:
        """Store JSON `data` in the worker's own `bucket`, retried like `put_text`.

        A missing bucket is made, with a lifecycle rule that deletes its objects
        `expire_days` days after they were written (a backstop: readers check the age).
        """
        what = f"store {bucket}/{object_name}"

        def attempt() -> None:
            try:
                self._put(bucket, object_name, data, content_type="application/json")
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                self._make_bucket(bucket)
                self._expire_after(bucket, expire_days)
                self._put(bucket, object_name, data, content_type="application/json")

        def translated() -> None:
            try:
                attempt()
            except (MinioException, ValueError, *_CONNECTION_ERRORS) as exc:
                raise _translate(what, exc) from exc

        self._retrying(translated)

    def get_private(self, bucket: str, object_name: str) -> bytes | None:
        """The object's bytes, or None if it (or its bucket) does not exist; one try only.

        Not retried: a caller that cannot tell goes on as if it were missing, and a MinIO
        that is down must not hold up every request by the length of a retry policy.
        """
        what = f"read {bucket}/{object_name}"
        try:
            response = self._client.get_object(bucket, object_name)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return None
            raise _translate(what, exc) from exc
        except (MinioException, ValueError, *_CONNECTION_ERRORS) as exc:
            raise _translate(what, exc) from exc

    def _expire_after(self, bucket: str, days: int) -> None:
        rule = Rule(ENABLED, rule_filter=Filter(prefix=""), rule_id="mstc-expire",
                    expiration=Expiration(days=days))  # fmt: skip
        try:
            self._client.set_bucket_lifecycle(bucket, LifecycleConfig([rule]))
        except S3Error as exc:
            # Records still expire for readers (they check the age); only the space stays.
            log.warning("minio: no lifecycle rule on %s, its objects stay: %s", bucket, exc)

    # --- a Job's own credentials (job_access) ----------------------------------------------

    def job_credentials(self, policy: str, duration_seconds: int) -> TemporaryCredentials:
        """Temporary credentials limited by the session `policy`, from MinIO's STS AssumeRole.

        Signed with the worker's own key (MINIO_ROOT_USER/PASSWORD): MinIO accepts AssumeRole
        from its root user and from any ordinary user, and what the credentials may do is
        the intersection of `policy` with that user's own policy. Raises StorageUnavailable
        once the retries are spent, StorageRejected at once (e.g. the key may not assume).
        """

        def translated() -> TemporaryCredentials:
            try:
                credentials = self._assume_role(policy, duration_seconds).retrieve()
            except (MinioException, ValueError, ET.ParseError, *_CONNECTION_ERRORS) as exc:
                raise _translate_sts(exc) from exc
            if credentials.session_token is None:
                raise StorageRejected("MinIO's AssumeRole answer holds no session token")
            return TemporaryCredentials(
                credentials.access_key, credentials.secret_key, credentials.session_token
            )

        return self._retrying(translated)

    def _assume_role(self, policy: str, duration_seconds: int) -> AssumeRoleProvider:
        settings = self._settings
        scheme = "https" if settings.s3_secure else "http"
        ca_file = str(settings.tls_ca_file) if settings.tls_ca_file else None
        return AssumeRoleProvider(
            sts_endpoint=f"{scheme}://{settings.s3_endpoint}",
            access_key=settings.minio_root_user,
            secret_key=settings.minio_root_password.get_secret_value(),
            duration_seconds=duration_seconds,
            policy=policy,
            http_client=_http_client(ca_file),
        )


@dataclass(frozen=True)
class TemporaryCredentials:
    """A key that MinIO's STS made: all three parts are needed to sign a request."""

    access_key: str
    secret_key: str = field(repr=False)
    session_token: str = field(repr=False)


_STS_STATUS = re.compile(r"failed with HTTP status code (\d+)")


def _translate_sts(exc: Exception) -> TransientError | PermanentError:
    """The worker's error for a failed AssumeRole (the library reports only the status)."""
    what = "get a Job's temporary MinIO credentials"
    match = _STS_STATUS.search(str(exc)) if isinstance(exc, ValueError) else None
    if match is None:
        return _translate(what, exc)
    status = int(match.group(1))
    text = f"{what}: MinIO's STS answered HTTP {status}"
    return StorageUnavailable(text) if status == 429 or status >= 500 else StorageRejected(text)


# --- the clients' MinIO user (the chart's post-install hook, `mstc-worker add-client-user`) ---

CLIENT_POLICY_NAME = "mstc-client"
# S3 data calls on every bucket: what `mstc` and mstc_client do (look up and create buckets,
# list, read, write and delete objects). No admin call, no bucket deletion and no bucket
# settings (policies, notifications, ...), which could open a bucket to anyone.
CLIENT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "s3:GetBucketLocation",
                "s3:ListBucket",
                "s3:ListBucketMultipartUploads",
                "s3:CreateBucket",
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": ["arn:aws:s3:::*"],
        }
    ],
}


def client_policy(own_bucket: str) -> dict[str, object]:
    """CLIENT_POLICY with every call on the worker's `own_bucket` (its reply records) denied.

    Clients name their data buckets freely, so the grant is on every bucket; the worker's
    records say what each request was answered and are no client's business.
    """
    deny = {
        "Effect": "Deny",
        "Action": ["s3:*"],
        "Resource": [f"arn:aws:s3:::{own_bucket}", f"arn:aws:s3:::{own_bucket}/*"],
    }
    return {**CLIENT_POLICY, "Statement": [*CLIENT_POLICY["Statement"], deny]}


def add_client_user(settings: Settings, access_key: str, secret_key: str) -> None:
    """Make (or update) the MinIO user `access_key` with the policy CLIENT_POLICY_NAME.

    Signed with the worker's MinIO key, which must be allowed to administer users (MinIO's
    root key in the chart). Idempotent: the policy is replaced, the user's secret set again.
    Raises StorageUnavailable once the retries are spent, StorageRejected at once.
    """
    ca_file = str(settings.tls_ca_file) if settings.tls_ca_file else None
    admin = MinioAdmin(
        endpoint=settings.s3_endpoint,
        credentials=StaticProvider(
            settings.minio_root_user, settings.minio_root_password.get_secret_value()
        ),
        secure=settings.s3_secure,
        http_client=_http_client(ca_file),
    )

    def attempt() -> None:
        try:
            admin.policy_add(
                CLIENT_POLICY_NAME, policy=client_policy(settings.reply_records_bucket)
            )
            admin.user_add(access_key, secret_key)
            admin.policy_set(CLIENT_POLICY_NAME, user=access_key)
        except MinioAdminException as exc:
            status = int(exc._code) if exc._code.isdigit() else 0
            text = f"add the MinIO client user {access_key!r}: {exc}"
            if status == 429 or status >= 500:
                raise StorageUnavailable(text) from exc
            raise StorageRejected(text) from exc
        except (MinioException, ValueError, *_CONNECTION_ERRORS) as exc:
            raise _translate(f"add the MinIO client user {access_key!r}", exc) from exc

    Retrying(
        retry=retry_if_exception_type(StorageUnavailable),
        stop=stop_after_attempt(_ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=4.0) + wait_random(0, 0.25),
        before_sleep=_log_retry,
        reraise=True,
    )(attempt)
