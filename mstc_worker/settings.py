"""Every setting of the worker: its environment variable, default, unit and validation.

Settings are read once at start-up by `load_settings` and passed down; nothing
imports a global instance, so tests and worker processes get exactly the
configuration they were handed.

The Java worker's environment names (WORK_QUEUE_*, MINIO_SERVICE_*, MINIO_ROOT_*)
work unchanged, so an existing deployment's env carries over; every new setting is
prefixed MSTC_. Names are matched exactly (case-sensitive, no nested delimiter)
because Kubernetes injects ``<SERVICE>_PORT=tcp://...`` variables into every pod,
and a looser match could pick those up as settings. Empty values count as unset,
as Helm templates and compose files often render optional variables empty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import (
    Field,
    FilePath,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mstc_worker.errors import ConfigError
from mstc_worker.kube_syntax import dns1123_label_problem, dns1123_subdomain_problem

__all__ = ["Settings", "load_settings"]

# The well-known defaults of RabbitMQ and MinIO: anyone can guess them.
_DEFAULT_CREDENTIALS = {("guest", "guest"), ("minioadmin", "minioadmin")}
# Settings whose empty value is a choice (off), not "unset".
_EMPTY_MEANS_OFF = frozenset({"MSTC_EVENTS_EXCHANGE"})
_AMQP_SCHEMES = {"amqp": 5672, "amqps": 5671}
_S3_SCHEMES = {"http": 80, "https": 443}


def _setting(default: Any, env: str, description: str, **constraints: Any) -> Any:
    """A field read from `env`; typed Any so each field keeps its own annotation."""
    return Field(default, validation_alias=env, description=description, **constraints)


def _port(default: int, env: str, what: str) -> Any:
    return _setting(default, env, f"{what} (TCP port, 1-65535).", ge=1, le=65535)


class Settings(BaseSettings):
    """The worker's configuration; build it with `load_settings`.

    The values come only from the mapping `load_settings` is given (the process environment
    by default), never from the environment behind its back: a test's explicit mapping is the
    whole truth, whatever the shell running it exports.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    _http_token: SecretStr | None = PrivateAttr(default=None)

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        # Errors chained to a ConfigError end up in logs; they must not echo passwords.
        hide_input_in_errors=True,
    )

    # Java worker names.
    work_queue_host: str = _setting(
        "mstc-work-queue", "WORK_QUEUE_HOST", "RabbitMQ host name.", min_length=1
    )
    work_queue_port: int = _port(5672, "WORK_QUEUE_PORT", "RabbitMQ AMQP port")
    work_queue_user: str = _setting("guest", "WORK_QUEUE_USER", "RabbitMQ user.", min_length=1)
    work_queue_pass: SecretStr = _setting(
        SecretStr("guest"), "WORK_QUEUE_PASS", "RabbitMQ password."
    )
    minio_service_host: str = _setting(
        "minio", "MINIO_SERVICE_HOST", "MinIO host; also given to every Job.", min_length=1
    )
    minio_service_port: int = _port(9000, "MINIO_SERVICE_PORT", "MinIO S3 API port")
    minio_root_user: str = _setting(
        "minioadmin",
        "MINIO_ROOT_USER",
        "MinIO access key the worker uploads logs with.",
        min_length=1,
    )
    minio_root_password: SecretStr = _setting(
        SecretStr("minioadmin"), "MINIO_ROOT_PASSWORD", "MinIO secret key for log uploads."
    )

    # Endpoint overrides, for a worker that reaches the servers by another route than Jobs do.
    amqp_url_override: SecretStr | None = _setting(
        None,
        "MSTC_AMQP_URL",
        "amqp(s)://[user:pass@]host[:port][/vhost]; wins over WORK_QUEUE_HOST/PORT. "
        "Credentials it omits come from WORK_QUEUE_USER/WORK_QUEUE_PASS.",
    )
    s3_endpoint_override: str | None = _setting(
        None,
        "MSTC_S3_ENDPOINT",
        "http(s)://host[:port] the worker itself uses for MinIO; wins over "
        "MINIO_SERVICE_HOST/PORT. Jobs still get MINIO_SERVICE_HOST/PORT.",
    )

    tls_ca_file: FilePath | None = _setting(
        None,
        "MSTC_TLS_CA_FILE",
        "PEM file of the CA(s) that sign RabbitMQ's and MinIO's certificates, used when "
        "MSTC_AMQP_URL is amqps:// or MSTC_S3_ENDPOINT is https://; default: the system's "
        "store. Certificates and host names are always verified.",
    )

    # New settings.
    namespace: str = _setting("mstc-dev", "MSTC_NAMESPACE", "Namespace the Jobs run in.")
    concurrency: int = _setting(
        # Waiting on a Job costs little here (bench/: `capacity` holds 1,000 in flight and
        # `capacity_10k` 10,000 in one replica), so the default lets a replica keep many
        # running, and the bound is what the bench has measured.
        100,
        "MSTC_CONCURRENCY",
        "Maximum requests (Jobs) in flight per replica; the AMQP prefetch follows it.",
        ge=1,
        le=10_000,
    )
    default_timeout_minutes: int = _setting(
        15,
        "MSTC_DEFAULT_TIMEOUT_MINUTES",
        "Timeout (minutes) of a request whose timeOut is missing or 0.",
        ge=1,
    )
    max_timeout_minutes: int = _setting(
        10080,
        "MSTC_MAX_TIMEOUT_MINUTES",
        "Largest timeOut (minutes) a request may ask for; larger ones are rejected.",
        ge=1,
    )
    max_parallelism: int = _setting(
        10,
        "MSTC_MAX_PARALLELISM",
        "Largest parallelism (pods of one Job running at once) a request may ask for; "
        "larger ones are rejected. Every pod counts against the namespace's quota.",
        ge=1,
        le=1000,
    )
    max_completions: int = _setting(
        100,
        "MSTC_MAX_COMPLETIONS",
        "Largest completions (pods of one Job that must succeed) a request may ask for; "
        "larger ones are rejected. The stored log holds every pod's log, so it grows with this.",
        ge=1,
        le=100_000,
    )
    job_ttl_seconds: int = _setting(
        30,
        "MSTC_JOB_TTL_SECONDS",
        "Seconds a finished Job is kept before Kubernetes deletes it.",
        ge=0,
    )
    reply_records_bucket: str = _setting(
        "mstc-worker-replies",
        "MSTC_REPLY_RECORDS_BUCKET",
        "The worker's own bucket for the replies it sent (to answer a request sent again "
        "after its Job is gone); requests may not name it, so no Job can reach it.",
        min_length=3,
        max_length=63,
    )
    reply_record_seconds: int = _setting(
        172_800,
        "MSTC_REPLY_RECORD_SECONDS",
        "Seconds a sent reply is kept and sent again to the same request, instead of "
        "running it a second time (at least a day).",
        ge=86_400,
    )
    job_run_as_non_root: bool = _setting(
        False,
        "MSTC_JOB_RUN_AS_NON_ROOT",
        "Refuse to start a Job's container as root (runAsNonRoot). Off by default: many job "
        "images run as root, and they already run without privilege escalation, capabilities "
        "or a service-account token.",
    )
    job_read_only_root: bool = _setting(
        False,
        "MSTC_JOB_READ_ONLY_ROOT",
        "Mount a Job container's root filesystem read-only (readOnlyRootFilesystem).",
    )
    request_label_prefixes: str = _setting(
        "",
        "MSTC_REQUEST_LABEL_PREFIXES",
        "Comma-separated key prefixes (e.g. 'example.org/,team-') of the labels a request may "
        "put on its Job and pod; default none: a request with labels is rejected. Keys the "
        "worker or Kubernetes set (app.kubernetes.io/, mstc.io/, ...) stay refused.",
    )
    request_annotation_prefixes: str = _setting(
        "",
        "MSTC_REQUEST_ANNOTATION_PREFIXES",
        "Comma-separated key prefixes (e.g. 'example.org/') of the annotations a request may "
        "put on its pod; default none: a request with annotations is rejected. The local "
        "stack sets 'mstc.test/' (its simulated pods obey those annotations).",
    )
    heartbeat_seconds: int = _setting(
        30, "MSTC_HEARTBEAT_SECONDS", "AMQP heartbeat interval (seconds).", ge=1, le=3600
    )
    events_exchange: str = _setting(
        "amq.topic",
        "MSTC_EVENTS_EXCHANGE",
        "Topic exchange the Jobs' lifecycle events and the replica heartbeats go to (amq.topic "
        "is also the MQTT plugin's); it must exist. The empty string turns both off.",
        max_length=255,
    )
    replica_heartbeat_seconds: int = _setting(
        5,
        "MSTC_REPLICA_HEARTBEAT_SECONDS",
        "Seconds between the replica heartbeats published to MSTC_EVENTS_EXCHANGE (not the "
        "AMQP heartbeat, which is MSTC_HEARTBEAT_SECONDS).",
        ge=1,
        le=3600,
    )
    http_port: int = _port(8080, "MSTC_HTTP_PORT", "Port for metrics, health and REST")
    http_host: str = _setting(
        "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
        "MSTC_HTTP_HOST",
        "Address the HTTP port binds to (127.0.0.1 to keep it local).",
    )
    http_token_file: FilePath | None = _setting(
        None,
        "MSTC_HTTP_TOKEN_FILE",
        "File holding the bearer token that POST /mstc/worker/execute requires; without it "
        "the REST execute endpoint is off (403). Read once at start.",
    )
    http_max_waiting: int = _setting(
        16,
        "MSTC_HTTP_MAX_WAITING",
        "Most REST execute calls waiting at once per replica; more are answered 503.",
        ge=1,
        le=1000,
    )
    image_allow: str = _setting(
        "*",
        "MSTC_IMAGE_ALLOW",
        "Comma-separated glob patterns of allowed images; '*' also matches '/'.",
    )
    results_queue: str = _setting(
        "mstc.queue.results",
        "MSTC_RESULTS_QUEUE",
        "Durable queue for replies to requests that carry no reply_to.",
        min_length=1,
        max_length=255,
    )
    work_queue: str = _setting(
        "mstc.queue.work",
        "MSTC_WORK_QUEUE",
        "Durable queue requests are consumed from.",
        min_length=1,
        max_length=255,
    )
    control_queue: str = _setting(
        "mstc.queue.control",
        "MSTC_CONTROL_QUEUE",
        "Durable queue of control messages (cancel), consumed by every replica.",
        min_length=1,
        max_length=255,
    )
    exchange: str = _setting(
        "mstc.exchange",
        "MSTC_EXCHANGE",
        "Direct exchange the work queue is bound to.",
        min_length=1,
        max_length=255,
    )
    events_job_listener_topic: bool = _setting(
        False,
        "MSTC_EVENTS_JOB_LISTENER_TOPIC",
        "Also publish each succeeded event under services.mqtt_job_listener.job_complete.NAME "
        "(MQTT services/mqtt_job_listener/job_complete/NAME), for subscribers of the MQTT job "
        "listener.",
    )
    max_body_bytes: int = _setting(
        1_048_576,
        "MSTC_MAX_BODY_BYTES",
        "Largest request body (bytes) accepted; larger ones are rejected.",
        ge=64,
    )
    minio_secret_name: str = _setting(
        "mstc-minio",
        "MSTC_MINIO_SECRET_NAME",
        "Kubernetes Secret (keys rootUser, rootPassword) Jobs read MinIO credentials from "
        "when MSTC_JOB_ROOT_CREDENTIALS is on.",
    )
    log_format: Literal["text", "json"] = _setting(
        "text", "MSTC_LOG_FORMAT", "Log line format: text or json."
    )
    allow_default_credentials: bool = _setting(
        False,
        "MSTC_ALLOW_DEFAULT_CREDENTIALS",
        "Start even with guest/guest or minioadmin/minioadmin (local stacks only).",
    )
    processes: int = _setting(
        2,
        "MSTC_PROCESSES",
        "Worker processes per replica; each holds one Job watch and one Pod watch.",
        ge=1,
        le=64,
    )
    claim_stale_seconds: int = _setting(
        60,
        "MSTC_CLAIM_STALE_SECONDS",
        "Seconds after which another worker may take over an unfinished reply (a crash).",
        ge=5,
    )
    resync_seconds: int = _setting(
        15,
        "MSTC_RESYNC_SECONDS",
        "Seconds between sweeps for finished Jobs whose reply is still owed.",
        ge=1,
    )
    dead_letter_queue: str = _setting(
        "mstc.queue.dead",
        "MSTC_DEAD_LETTER_QUEUE",
        "Durable queue for requests that crashed a worker process twice (reason in headers).",
        min_length=1,
        max_length=255,
    )
    shutdown_grace_seconds: int = _setting(
        30,
        "MSTC_SHUTDOWN_GRACE_SECONDS",
        "Seconds in-flight requests get to finish after SIGTERM.",
        ge=0,
    )

    # Storage credentials of Jobs (mstc_worker/job_access.py).
    job_root_credentials: bool = _setting(
        False,
        "MSTC_JOB_ROOT_CREDENTIALS",
        "Give every Job the MinIO key of the MSTC_MINIO_SECRET_NAME Secret (MinIO's root key "
        "in the chart), as the Java worker did. Off by default: each Job gets temporary "
        "credentials that read only its input bucket and prefix and write only its output "
        "bucket and prefix. Only for job images that cannot send a session token.",
    )

    # Task queues of Jobs (mstc_worker/task_queues.py, mstc_worker/rabbit_admin.py): off
    # unless all three are set, and a request naming a task queue is then rejected.
    tasks_management_url: str | None = _setting(
        None,
        "MSTC_TASKS_MANAGEMENT_URL",
        "http(s)://host:port of RabbitMQ's management API, through which the worker makes a "
        "RabbitMQ user for each Job that asks for a task queue (and removes it afterwards).",
    )
    tasks_admin_user: str | None = _setting(
        None,
        "MSTC_TASKS_ADMIN_USER",
        "RabbitMQ user the worker manages task-queue users with; it must be allowed to manage "
        "users and permissions (tag 'administrator'). Separate from WORK_QUEUE_USER, which "
        "needs no such power.",
    )
    tasks_admin_pass: SecretStr | None = _setting(
        None, "MSTC_TASKS_ADMIN_PASS", "Password of MSTC_TASKS_ADMIN_USER."
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_is_label(cls, value: str) -> str:
        problem = dns1123_label_problem(value)
        if problem is not None:
            raise ValueError(f"not a Kubernetes namespace name: {problem}")
        return value

    @field_validator("minio_secret_name")
    @classmethod
    def _secret_name_is_subdomain(cls, value: str) -> str:
        problem = dns1123_subdomain_problem(value)
        if problem is not None:
            raise ValueError(f"not a Kubernetes Secret name: {problem}")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("image_allow")
    @classmethod
    def _some_pattern(cls, value: str) -> str:
        if not _split_patterns(value):
            raise ValueError("must list at least one image pattern, such as '*'")
        return value

    @field_validator("amqp_url_override")
    @classmethod
    def _amqp_url_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # Parsing raises on a bad port; the message must not echo the password.
            _endpoint(value.get_secret_value(), _AMQP_SCHEMES, allow_path=True)
        return value

    @field_validator("s3_endpoint_override")
    @classmethod
    def _s3_endpoint_shape(cls, value: str | None) -> str | None:
        if value is not None:
            _endpoint(value, _S3_SCHEMES, allow_path=False)
        return value

    @field_validator("tasks_management_url")
    @classmethod
    def _management_url_shape(cls, value: str | None) -> str | None:
        if value is not None:
            _endpoint(value, _S3_SCHEMES, allow_path=True)
        return value

    @model_validator(mode="after")
    def _task_queues_all_or_none(self) -> Settings:
        given = [self.tasks_management_url, self.tasks_admin_user, self.tasks_admin_pass]
        if any(value is not None for value in given) and None in given:
            raise ValueError(
                "MSTC_TASKS_MANAGEMENT_URL, MSTC_TASKS_ADMIN_USER and MSTC_TASKS_ADMIN_PASS "
                "go together: set all three for task queues, or none"
            )
        return self

    @model_validator(mode="after")
    def _default_within_max(self) -> Settings:
        if self.default_timeout_minutes > self.max_timeout_minutes:
            raise ValueError(
                f"MSTC_DEFAULT_TIMEOUT_MINUTES ({self.default_timeout_minutes}) must not "
                f"exceed MSTC_MAX_TIMEOUT_MINUTES ({self.max_timeout_minutes})"
            )
        return self

    @model_validator(mode="after")
    def _read_http_token(self) -> Settings:
        if self.http_token_file is not None:
            try:
                token = self.http_token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"MSTC_HTTP_TOKEN_FILE cannot be read: {exc}") from None
            if len(token) < 16:
                raise ValueError("MSTC_HTTP_TOKEN_FILE must hold a token of 16 characters or more")
            self._http_token = SecretStr(token)
        return self

    # --- Resolved values ----------------------------------------------------------------
    @property
    def http_token(self) -> str | None:
        """The REST port's bearer token (from MSTC_HTTP_TOKEN_FILE); None: execute is off."""
        return None if self._http_token is None else self._http_token.get_secret_value()

    @property
    def amqp_url(self) -> str:
        """The broker URL for pika, credentials included: never log it (see amqp_url_for_logs)."""
        user = quote(self.work_queue_user, safe="")
        userinfo = f"{user}:{quote(self.work_queue_pass.get_secret_value(), safe='')}"
        if self.amqp_url_override is None:
            # %2F is the default vhost "/", spelled out so pika does not guess.
            return f"amqp://{userinfo}@{self.work_queue_host}:{self.work_queue_port}/%2F"
        parts = urlsplit(self.amqp_url_override.get_secret_value())
        if parts.username is not None:
            return parts.geturl()
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))

    @property
    def task_queues(self) -> bool:
        """Whether Jobs may have task queues (the MSTC_TASKS_* settings are set)."""
        return self.tasks_management_url is not None

    @property
    def amqp_vhost(self) -> str:
        """The RabbitMQ virtual host the worker uses (its queues, and the Jobs' task queues)."""
        path = urlsplit(self.amqp_url).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @property
    def amqp_url_for_logs(self) -> str:
        """The broker URL with its password masked."""
        parts = urlsplit(self.amqp_url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))

    @property
    def amqp_credentials(self) -> tuple[str, str]:
        """The (user, password) the worker logs in to RabbitMQ with."""
        parts = urlsplit(self.amqp_url)
        return unquote(parts.username or ""), unquote(parts.password or "")

    @property
    def s3_endpoint(self) -> str:
        """``host:port`` of MinIO as the worker reaches it (the minio client's endpoint)."""
        if self.s3_endpoint_override is None:
            return f"{self.minio_service_host}:{self.minio_service_port}"
        return _endpoint(self.s3_endpoint_override, _S3_SCHEMES, allow_path=False)

    @property
    def s3_secure(self) -> bool:
        """Whether the worker talks TLS to MinIO (only when MSTC_S3_ENDPOINT says https)."""
        override = self.s3_endpoint_override
        return override is not None and urlsplit(override).scheme == "https"

    @property
    def image_patterns(self) -> tuple[str, ...]:
        """The MSTC_IMAGE_ALLOW patterns, blanks dropped."""
        return _split_patterns(self.image_allow)

    @property
    def label_prefixes(self) -> tuple[str, ...]:
        """The MSTC_REQUEST_LABEL_PREFIXES key prefixes, blanks dropped."""
        return _split_patterns(self.request_label_prefixes)

    @property
    def annotation_prefixes(self) -> tuple[str, ...]:
        """The MSTC_REQUEST_ANNOTATION_PREFIXES key prefixes, blanks dropped."""
        return _split_patterns(self.request_annotation_prefixes)

    def image_allowed(self, image: str) -> bool:
        """Whether `image`, exactly as written in the request, matches an allowed pattern."""
        return any(fnmatchcase(image, pattern) for pattern in self.image_patterns)

    def check_credentials(self) -> None:
        """Refuse the well-known default credentials unless explicitly allowed.

        A worker reachable with guest/guest or minioadmin/minioadmin lets anyone
        run containers in the cluster, so this must be an explicit, visible choice.
        """
        if self.allow_default_credentials:
            return
        problems = []
        if self.amqp_credentials in _DEFAULT_CREDENTIALS:
            problems.append(
                "WORK_QUEUE_USER/WORK_QUEUE_PASS (or MSTC_AMQP_URL): the broker credentials are "
                "RabbitMQ's well-known default; set real ones, or "
                "MSTC_ALLOW_DEFAULT_CREDENTIALS=true for a local stack"
            )
        minio = (self.minio_root_user, self.minio_root_password.get_secret_value())
        if minio in _DEFAULT_CREDENTIALS:
            problems.append(
                "MINIO_ROOT_USER/MINIO_ROOT_PASSWORD: the MinIO credentials are the well-known "
                "default; set real ones, or MSTC_ALLOW_DEFAULT_CREDENTIALS=true for a local stack"
            )
        if problems:
            raise ConfigError(problems)


def _split_patterns(value: str) -> tuple[str, ...]:
    return tuple(pattern.strip() for pattern in value.split(",") if pattern.strip())


def _endpoint(url: str, schemes: Mapping[str, int], *, allow_path: bool) -> str:
    """Check a URL's shape and return its ``host:port`` (scheme's default port if none)."""
    parts = urlsplit(url)
    allowed = " or ".join(f"{scheme}://" for scheme in schemes)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must look like {allowed}host:port")
    try:
        port = parts.port or schemes[parts.scheme]
    except ValueError:
        raise ValueError("has an invalid port number") from None
    if not allow_path and (parts.path not in ("", "/") or parts.query or parts.username):
        raise ValueError(f"must be only {allowed}host:port, without path or credentials")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def _problem_line(error: Mapping[str, Any], secrets: set[str]) -> str:
    loc = error.get("loc", ())
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return message
    name = str(loc[0])
    if name in secrets or "input" not in error:
        return f"{name}: {message}"
    return f"{name}: {message} (got {error['input']!r})"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment) and check them.

    Raises ConfigError with one line per bad setting, each naming its environment
    variable; secret values are never echoed.
    """
    source = os.environ if env is None else env
    values = {
        name: value for name, value in source.items() if value != "" or name in _EMPTY_MEANS_OFF
    }
    secrets = {
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if field.annotation in (SecretStr, SecretStr | None)
    }
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        problems = [_problem_line(error, secrets) for error in exc.errors()]
        raise ConfigError(problems) from exc
    settings.check_credentials()
    return settings
