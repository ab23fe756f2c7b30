"""The flow service's settings: `FlowSettings`, built once by `load_settings` and passed down.

Broker and storage come from the very variables the worker and the `mstc` command read
(`MSTC_AMQP_URL`, `MSTC_S3_ENDPOINT`, ... as `mstc_client.ClientConfig` reads them), so one
env.sh or Secret configures all three. What only the flow service has starts with
`MSTC_FLOW_`. Values come only from the mapping given (the process environment by default);
secrets never appear in `repr` or in errors.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from mstc_client.config import ClientConfig
from mstc_client.errors import ConfigError as ClientConfigError
from mstc_flow.errors import ConfigError

__all__ = ["FlowSettings", "load_settings"]


def _setting(default: Any, env: str, description: str, **rules: Any) -> Any:
    return Field(default, validation_alias=env, description=description, **rules)


class FlowSettings(BaseModel):
    """The flow service's configuration (see each field's description and variable)."""

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    store_url: SecretStr | None = _setting(
        None,
        "MSTC_FLOW_STORE_URL",
        "SQLAlchemy URL of the store, e.g. postgresql+psycopg://user:pass@host/db; "
        "wins over MSTC_FLOW_STORE_PATH. Several replicas need PostgreSQL.",
    )
    store_path: str = _setting(
        "mstc-flow.sqlite3", "MSTC_FLOW_STORE_PATH", "SQLite file used when no URL is set."
    )
    catalog: str = _setting(
        "",
        "MSTC_FLOW_CATALOG",
        "Where the catalog is: file:PATH, configmap:NAMESPACE/NAME[/KEY] or "
        "s3://BUCKET/OBJECT; empty = no catalog (history and API only).",
    )
    catalog_poll_seconds: float = _setting(
        5.0,
        "MSTC_FLOW_CATALOG_POLL_SECONDS",
        "How often the catalog is checked for changes.",
        gt=0,
        le=3600,
    )
    refresh_topic: str = _setting(
        "services/mqtt_job_listener/REFRESH",
        "MSTC_FLOW_REFRESH_TOPIC",
        "MQTT topic (or AMQP key with dots) whose messages reload the catalog at once.",
        min_length=1,
    )
    inbox_queue: str = _setting(
        "mstc.flow.inbox",
        "MSTC_FLOW_INBOX_QUEUE",
        "Durable queue the replicas share: job events, heartbeats, triggers, refreshes.",
        min_length=1,
    )
    reply_queue: str = _setting(
        "mstc.flow.replies",
        "MSTC_FLOW_REPLY_QUEUE",
        "Durable queue the worker replies to for the requests the flow submits.",
        min_length=1,
    )
    submit_attempts: int = _setting(
        5,
        "MSTC_FLOW_SUBMIT_ATTEMPTS",
        "Tries to submit a fired request before parking it.",
        ge=1,
        le=100,
    )
    history_retention_days: float = _setting(
        30.0,
        "MSTC_FLOW_HISTORY_RETENTION_DAYS",
        "History older than this is deleted; 0 = keep.",
        ge=0,
    )
    http_host: str = _setting("0.0.0.0", "MSTC_FLOW_HTTP_HOST", "Address the API listens on.")  # noqa: S104
    http_port: int = _setting(8090, "MSTC_FLOW_HTTP_PORT", "Port of the API.", ge=0, le=65535)
    read_token: SecretStr | None = _setting(
        None, "MSTC_FLOW_READ_TOKEN", "Bearer token that may read the API (optional)."
    )
    admin_token: SecretStr = _setting(
        ...,
        "MSTC_FLOW_ADMIN_TOKEN",
        "Bearer token that may read and change (retry, cancel, fire); required, 16+ chars.",
        min_length=16,
    )
    replica: str = _setting("", "MSTC_FLOW_REPLICA", "This replica's name; default: the host name.")
    client: ClientConfig = Field(description="Broker and storage, as mstc_client reads them.")

    # --- the trigger engine (H3: broker, triggers, submitter) ---------------------------------
    inbox_prefetch: int = _setting(
        20, "MSTC_FLOW_INBOX_PREFETCH", "Inbox messages a replica holds unacked at once.",
        ge=1, le=1000,
    )  # fmt: skip
    claim_stale_seconds: float = _setting(
        60.0,
        "MSTC_FLOW_CLAIM_STALE_SECONDS",
        "A firing or pipeline task claimed this long ago and not yet confirmed sent (its "
        "replica died while submitting) is sent again, as the same request, by any replica.",
        gt=0,
        le=3600,
    )
    submit_backoff_seconds: float = _setting(
        1.0,
        "MSTC_FLOW_SUBMIT_BACKOFF_SECONDS",
        "First pause between submit attempts of a firing; doubles each time, capped at 30 s.",
        ge=0,
        le=60,
    )
    pending_scan_seconds: float = _setting(
        5.0,
        "MSTC_FLOW_PENDING_SCAN_SECONDS",
        "How often pending firings and runnable pipeline tasks (left by a crash, or waiting for "
        "a free slot) are looked at, besides the events that wake the flow at once.",
        gt=0,
        le=3600,
    )

    # --- stalled flags (mstc_flow.stalled) -----------------------------------------------------
    stall_scan_seconds: float = _setting(
        5.0,
        "MSTC_FLOW_STALL_SCAN_SECONDS",
        "How often each replica looks for stalled work (pending Jobs, overdue Jobs, quiet "
        "worker replicas) and updates the flags.",
        gt=0,
        le=3600,
    )
    pending_flag_seconds: float = _setting(
        300.0,
        "MSTC_FLOW_PENDING_FLAG_SECONDS",
        "A Job accepted this long ago without a running pod (unschedulable, stuck pulling) is "
        "flagged `pending`.",
        gt=0,
        le=86400,
    )

    @property
    def replica_id(self) -> str:
        return self.replica or socket.gethostname()

    @property
    def database_url(self) -> str:
        """The store's SQLAlchemy URL (secret: never log it)."""
        if self.store_url is not None:
            return self.store_url.get_secret_value()
        return f"sqlite:///{self.store_path}"


def load_settings(env: Mapping[str, str] | None = None) -> FlowSettings:
    """Build the settings from `env` (default: the process environment).

    Raises ConfigError with one line per bad setting, naming its environment variable.
    """
    source = os.environ if env is None else env
    values: dict[str, Any] = {name: value for name, value in source.items() if value != ""}
    try:
        values["client"] = ClientConfig.from_env(source)
    except ClientConfigError as exc:
        raise ConfigError([str(exc)]) from exc
    try:
        return FlowSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError([_problem(error) for error in exc.errors()]) from exc


def _problem(error: Mapping[str, Any]) -> str:
    field = FlowSettings.model_fields.get(str(error["loc"][0])) if error["loc"] else None
    name = field.validation_alias if field is not None else ".".join(map(str, error["loc"]))
    return f"{name}: {error['msg']}"
