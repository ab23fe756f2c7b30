"""Where the client finds RabbitMQ and MinIO: `ClientConfig`, read from the environment.

The variable names are the worker's own (and the Java worker's before it), so one `env.sh` or
one Kubernetes Secret configures both sides: `MSTC_AMQP_URL` or `WORK_QUEUE_HOST/PORT/USER/PASS`
for the broker, `MSTC_S3_ENDPOINT` or `MINIO_SERVICE_HOST/PORT` plus a MinIO key for storage,
`MSTC_EXCHANGE` and `MSTC_WORK_QUEUE` for the topology, `MSTC_EVENTS_EXCHANGE` for the job
events and replica heartbeats (`mstc events`, `mstc workers`). The key is any MinIO user's that
may read and write the buckets used (the chart makes one, see its NOTES): `MSTC_S3_ACCESS_KEY`
and `MSTC_S3_SECRET_KEY`, else the Java-era names `MINIO_ROOT_USER/PASSWORD`, which never had
to be the root key.
A few settings only a submitter has start with `MSTC_` too (`MSTC_BUCKET`, ...). Empty values
count as unset, as they do for the worker (but for `MSTC_EVENTS_EXCHANGE`, where empty means
off, as it does for the worker). Secrets never appear in `repr` or in error messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from mstc_client.errors import ConfigError

__all__ = ["ClientConfig"]

_AMQP_PORTS = {"amqp": 5672, "amqps": 5671}
_S3_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class ClientConfig:
    """Everything the client needs to reach the broker and storage.

    Build it with `ClientConfig.from_env()`, or directly when the values come from elsewhere.
    """

    amqp_url: str = field(repr=False)
    s3_endpoint: str  # host:port, the minio client's form
    s3_access_key: str = field(repr=False)
    s3_secret_key: str = field(repr=False)
    s3_secure: bool = False
    exchange: str = "mstc.exchange"
    work_queue: str = "mstc.queue.work"
    control_queue: str = "mstc.queue.control"
    bucket: str = "mstc"
    heartbeat_seconds: int = 30
    connect_timeout_seconds: float = 15.0
    reply_queue_expires_seconds: int = 3600
    declare_topology: bool = True
    events_exchange: str = "amq.topic"  # '' = the worker publishes no events or heartbeats
    # A fixed, durable reply queue (no x-expires, kept on close) for a long-lived submitter
    # such as mstc-flow, whose requests outlive one process; None = a private queue per client.
    reply_queue_name: str | None = None

    @property
    def amqp_url_for_display(self) -> str:
        """The broker URL with the password masked, for messages and logs."""
        parts = urlsplit(self.amqp_url)
        host = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}:***@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}{host}"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientConfig:
        """Read the settings from `env` (default: the process environment).

        Raises ConfigError naming the variable when a value cannot be used.
        """
        source = os.environ if env is None else env
        values = {name: value for name, value in source.items() if value != ""}
        s3_endpoint, s3_secure = _s3_endpoint(values)
        return cls(
            amqp_url=_amqp_url(values),
            s3_endpoint=s3_endpoint,
            s3_secure=s3_secure,
            s3_access_key=_first(values, "MSTC_S3_ACCESS_KEY", "MINIO_ROOT_USER", "minioadmin"),
            s3_secret_key=_first(values, "MSTC_S3_SECRET_KEY", "MINIO_ROOT_PASSWORD", "minioadmin"),
            exchange=values.get("MSTC_EXCHANGE", "mstc.exchange"),
            work_queue=values.get("MSTC_WORK_QUEUE", "mstc.queue.work"),
            control_queue=values.get("MSTC_CONTROL_QUEUE", "mstc.queue.control"),
            bucket=values.get("MSTC_BUCKET", "mstc"),
            heartbeat_seconds=int(_number(values, "MSTC_HEARTBEAT_SECONDS", 30, low=1)),
            connect_timeout_seconds=_number(values, "MSTC_CONNECT_TIMEOUT_SECONDS", 15, low=0),
            reply_queue_expires_seconds=int(
                _number(values, "MSTC_REPLY_QUEUE_EXPIRES_SECONDS", 3600, low=60)
            ),
            declare_topology=values.get("MSTC_DECLARE_TOPOLOGY", "true").lower()
            not in ("0", "false", "no"),
            # Empty is a choice here, as for the worker: events off.
            events_exchange=source.get("MSTC_EVENTS_EXCHANGE", "amq.topic"),
        )


def _first(values: Mapping[str, str], name: str, fallback: str, default: str) -> str:
    """`name`'s value, else `fallback`'s, else `default`."""
    return values.get(name, values.get(fallback, default))


def _number(values: Mapping[str, str], name: str, default: float, *, low: float) -> float:
    raw = values.get(name)
    if raw is None:
        return default
    try:
        number = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds; got {raw!r}.") from None
    if number < low:
        raise ConfigError(f"{name} must be at least {low:g}; got {raw!r}.")
    return number


def _port(values: Mapping[str, str], name: str, default: int) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name} must be a TCP port from 1 to 65535; got {raw!r}.")
    return int(raw)


def _amqp_url(values: Mapping[str, str]) -> str:
    user = quote(values.get("WORK_QUEUE_USER", "guest"), safe="")
    password = quote(values.get("WORK_QUEUE_PASS", "guest"), safe="")
    override = values.get("MSTC_AMQP_URL")
    if override is None:
        host = values.get("WORK_QUEUE_HOST", "mstc-work-queue")
        port = _port(values, "WORK_QUEUE_PORT", 5672)
        # %2F is the default vhost "/", spelled out so pika does not guess.
        return f"amqp://{user}:{password}@{host}:{port}/%2F"
    parts = urlsplit(override)
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError("MSTC_AMQP_URL has an invalid port number.") from None
    if parts.scheme not in _AMQP_PORTS or not parts.hostname:
        raise ConfigError(
            "MSTC_AMQP_URL must look like amqp://user:password@host:5672/%2F (or amqps://)."
        )
    if parts.username is not None:
        return override
    # Credentials the URL leaves out come from WORK_QUEUE_USER/PASS, as for the worker.
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


def _s3_endpoint(values: Mapping[str, str]) -> tuple[str, bool]:
    override = values.get("MSTC_S3_ENDPOINT")
    if override is None:
        host = values.get("MINIO_SERVICE_HOST", "minio")
        return f"{host}:{_port(values, 'MINIO_SERVICE_PORT', 9000)}", False
    parts = urlsplit(override)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("MSTC_S3_ENDPOINT has an invalid port number.") from None
    if (
        parts.scheme not in _S3_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.username
    ):
        raise ConfigError(
            # The value is not echoed: it may hold credentials, which do not belong there.
            "MSTC_S3_ENDPOINT must be only http(s)://host:port, e.g. http://minio:9000; "
            "put the credentials in MINIO_ROOT_USER/MINIO_ROOT_PASSWORD."
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port or _S3_PORTS[parts.scheme]}", parts.scheme == "https"
