"""Settings: Java env names, MSTC_ overrides, resolved endpoints, and config errors."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr, ValidationError

from mstc_worker.errors import ConfigError
from mstc_worker.settings import Settings, load_settings

ALLOW = {"MSTC_ALLOW_DEFAULT_CREDENTIALS": "true"}
REAL_CREDS = {
    "WORK_QUEUE_USER": "mstc",
    "WORK_QUEUE_PASS": "s3cret",
    "MINIO_ROOT_USER": "mstc",
    "MINIO_ROOT_PASSWORD": "s3cret-too",
}
JAVA_NAMES = {
    "WORK_QUEUE_HOST",
    "WORK_QUEUE_PORT",
    "WORK_QUEUE_USER",
    "WORK_QUEUE_PASS",
    "MINIO_SERVICE_HOST",
    "MINIO_SERVICE_PORT",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
}


def test_defaults_match_the_java_helm_values_and_the_brief() -> None:
    s = load_settings(ALLOW)
    assert (s.work_queue_host, s.work_queue_port) == ("mstc-work-queue", 5672)
    assert (s.work_queue_user, s.work_queue_pass.get_secret_value()) == ("guest", "guest")
    assert (s.minio_service_host, s.minio_service_port) == ("minio", 9000)
    assert s.minio_root_user == "minioadmin"
    assert s.minio_root_password.get_secret_value() == "minioadmin"
    assert s.namespace == "mstc-dev"
    assert s.concurrency == 100
    assert (s.default_timeout_minutes, s.max_timeout_minutes) == (15, 10080)
    assert (s.job_ttl_seconds, s.heartbeat_seconds, s.http_port) == (30, 30, 8080)
    assert s.image_patterns == ("*",)
    assert (s.work_queue, s.results_queue) == ("mstc.queue.work", "mstc.queue.results")
    assert s.exchange == "mstc.exchange"
    assert s.max_body_bytes == 1_048_576
    assert s.minio_secret_name == "mstc-minio"
    assert s.log_format == "text"
    assert s.shutdown_grace_seconds == 30


def test_java_env_names_are_read_as_they_are() -> None:
    s = load_settings(
        {
            **REAL_CREDS,
            "WORK_QUEUE_HOST": "rabbit",
            "WORK_QUEUE_PORT": "5673",
            "MINIO_SERVICE_HOST": "objects",
            "MINIO_SERVICE_PORT": "9100",
        }
    )
    assert s.amqp_url == "amqp://mstc:s3cret@rabbit:5673/%2F"
    assert s.amqp_credentials == ("mstc", "s3cret")
    assert (s.s3_endpoint, s.s3_secure) == ("objects:9100", False)
    assert s.minio_root_user == "mstc"


def test_every_setting_has_a_documented_env_name_java_or_mstc_prefixed() -> None:
    for name, field in Settings.model_fields.items():
        alias = str(field.validation_alias)
        assert alias in JAVA_NAMES or alias.startswith("MSTC_"), name
        assert field.description, f"{alias} has no description"


def test_secrets_are_secret_strings() -> None:
    s = load_settings({**REAL_CREDS, "MSTC_AMQP_URL": "amqp://u:p@h/"})
    assert isinstance(s.work_queue_pass, SecretStr)
    assert isinstance(s.minio_root_password, SecretStr)
    assert isinstance(s.amqp_url_override, SecretStr)
    assert "s3cret" not in repr(s)


def test_password_with_url_special_characters_round_trips() -> None:
    s = load_settings({**REAL_CREDS, "WORK_QUEUE_USER": "a b", "WORK_QUEUE_PASS": "p@ss:/%?"})
    assert s.amqp_credentials == ("a b", "p@ss:/%?")
    assert urlsplit(s.amqp_url).hostname == "mstc-work-queue"


def test_amqp_url_override_wins_over_work_queue_host_and_port() -> None:
    env = {**REAL_CREDS, "WORK_QUEUE_HOST": "ignored", "MSTC_AMQP_URL": "amqps://x:y@rmq:5671/v"}
    s = load_settings(env)
    assert s.amqp_url == "amqps://x:y@rmq:5671/v"
    assert s.amqp_credentials == ("x", "y")


def test_amqp_url_override_without_credentials_takes_work_queue_user_and_pass() -> None:
    s = load_settings({**REAL_CREDS, "MSTC_AMQP_URL": "amqp://rmq:5672/%2F"})
    assert s.amqp_url == "amqp://mstc:s3cret@rmq:5672/%2F"


def test_amqp_url_for_logs_masks_the_password() -> None:
    s = load_settings({**REAL_CREDS, "MSTC_AMQP_URL": "amqp://u:hunter2@rmq/"})
    assert s.amqp_url_for_logs == "amqp://u:***@rmq/"


@pytest.mark.parametrize(
    ("url", "endpoint", "secure"),
    [
        ("http://localhost:9000", "localhost:9000", False),
        ("https://s3.example.org", "s3.example.org:443", True),
        ("http://minio.local/", "minio.local:80", False),
        ("https://[::1]:9443", "[::1]:9443", True),
    ],
)
def test_s3_endpoint_override_wins_over_minio_service(
    url: str, endpoint: str, secure: bool
) -> None:
    s = load_settings({**REAL_CREDS, "MINIO_SERVICE_HOST": "ignored", "MSTC_S3_ENDPOINT": url})
    assert (s.s3_endpoint, s.s3_secure) == (endpoint, secure)
    assert s.minio_service_host == "ignored"  # Jobs still get the in-cluster name


def test_empty_values_count_as_unset() -> None:
    s = load_settings({**ALLOW, "WORK_QUEUE_HOST": "", "MSTC_AMQP_URL": "", "MSTC_CONCURRENCY": ""})
    assert s.work_queue_host == "mstc-work-queue"
    assert s.amqp_url_override is None
    assert s.concurrency == 100


def test_events_go_to_amq_topic_unless_the_exchange_is_set_empty_which_turns_them_off() -> None:
    assert load_settings(ALLOW).events_exchange == "amq.topic"
    assert load_settings({**ALLOW, "MSTC_EVENTS_EXCHANGE": "mstc.events"}).events_exchange == (
        "mstc.events"
    )
    # Unlike every other setting, empty is a value here: off.
    assert load_settings({**ALLOW, "MSTC_EVENTS_EXCHANGE": ""}).events_exchange == ""
    assert load_settings(ALLOW).events_job_listener_topic is False


def test_log_format_is_case_insensitive() -> None:
    assert load_settings({**ALLOW, "MSTC_LOG_FORMAT": "JSON"}).log_format == "json"


def test_image_allow_list_matches_globs_against_the_image_as_written() -> None:
    s = load_settings({**ALLOW, "MSTC_IMAGE_ALLOW": " registry.example.org/* , python:3.*,"})
    assert s.image_patterns == ("registry.example.org/*", "python:3.*")
    assert s.image_allowed("registry.example.org/team/tool:1")
    assert s.image_allowed("python:3.12")
    assert not s.image_allowed("docker.io/library/python:3.12")
    assert not s.image_allowed("evil.example/registry.example.org/x")


def test_settings_are_frozen() -> None:
    s = load_settings(ALLOW)
    with pytest.raises(ValidationError):
        s.concurrency = 2


def test_load_settings_without_a_mapping_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MSTC_ALLOW_DEFAULT_CREDENTIALS", "true")
    monkeypatch.setenv("MSTC_NAMESPACE", "from-os-env")
    assert load_settings().namespace == "from-os-env"


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("WORK_QUEUE_PORT", "abc", "valid integer"),
        ("WORK_QUEUE_PORT", "70000", "less than or equal to 65535"),
        ("MINIO_SERVICE_PORT", "0", "greater than or equal to 1"),
        ("MSTC_CONCURRENCY", "0", "greater than or equal to 1"),
        ("MSTC_DEFAULT_TIMEOUT_MINUTES", "0", "greater than or equal to 1"),
        ("MSTC_JOB_TTL_SECONDS", "-1", "greater than or equal to 0"),
        ("MSTC_HTTP_PORT", "http", "valid integer"),
        ("MSTC_NAMESPACE", "Bad_Namespace", "not a Kubernetes namespace name"),
        ("MSTC_MINIO_SECRET_NAME", "Secret!", "not a Kubernetes Secret name"),
        ("MSTC_LOG_FORMAT", "xml", "'text' or 'json'"),
        ("MSTC_ALLOW_DEFAULT_CREDENTIALS", "maybe", "valid boolean"),
        ("MSTC_IMAGE_ALLOW", " , ", "at least one image pattern"),
        ("MSTC_AMQP_URL", "http://rabbit:5672", "amqp:// or amqps://"),
        ("MSTC_AMQP_URL", "amqp://rabbit:notaport/", "invalid port"),
        ("MSTC_S3_ENDPOINT", "minio:9000", "http:// or https://"),
        ("MSTC_S3_ENDPOINT", "http://minio:9000/bucket", "without path or credentials"),
        ("MSTC_RESULTS_QUEUE", "q" * 256, "at most 255 characters"),
    ],
)
def test_bad_setting_gives_config_error_naming_the_variable(
    name: str, value: str, complaint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**ALLOW, name: value})
    (line,) = caught.value.problems
    assert line.startswith(f"{name}: ")
    assert complaint in line
    assert isinstance(caught.value.__cause__, ValidationError)


def test_each_bad_setting_gets_its_own_line() -> None:
    env = {**ALLOW, "WORK_QUEUE_PORT": "x", "MSTC_CONCURRENCY": "0", "MSTC_LOG_FORMAT": "xml"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    names = sorted(line.split(":")[0] for line in caught.value.problems)
    assert names == ["MSTC_CONCURRENCY", "MSTC_LOG_FORMAT", "WORK_QUEUE_PORT"]
    assert str(caught.value).count("\n  - ") == 3


def test_config_error_quotes_plain_values_but_never_secrets() -> None:
    env = {**ALLOW, "MSTC_CONCURRENCY": "zero", "MSTC_AMQP_URL": "amqp://u:hunter2@h:bad/"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert "(got 'zero')" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in str(caught.value.__cause__)


def test_default_timeout_above_maximum_names_both_variables() -> None:
    env = {**ALLOW, "MSTC_DEFAULT_TIMEOUT_MINUTES": "60", "MSTC_MAX_TIMEOUT_MINUTES": "30"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.problems == (
        "MSTC_DEFAULT_TIMEOUT_MINUTES (60) must not exceed MSTC_MAX_TIMEOUT_MINUTES (30)",
    )


def test_default_credentials_are_refused_naming_both_services() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({})
    first, second = caught.value.problems
    assert first.startswith("WORK_QUEUE_USER/WORK_QUEUE_PASS")
    assert second.startswith("MINIO_ROOT_USER/MINIO_ROOT_PASSWORD")
    assert "MSTC_ALLOW_DEFAULT_CREDENTIALS=true" in first


def test_only_the_service_with_default_credentials_is_named() -> None:
    env = {"MINIO_ROOT_USER": "mstc", "MINIO_ROOT_PASSWORD": "long-and-random"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    (line,) = caught.value.problems
    assert line.startswith("WORK_QUEUE_USER/WORK_QUEUE_PASS")


def test_default_credentials_inside_the_amqp_url_are_refused_too() -> None:
    with pytest.raises(ConfigError, match="WORK_QUEUE_USER/WORK_QUEUE_PASS"):
        load_settings({**REAL_CREDS, "MSTC_AMQP_URL": "amqp://guest:guest@rmq/"})


def test_real_credentials_pass_without_the_escape_hatch() -> None:
    assert load_settings(REAL_CREDS).amqp_credentials == ("mstc", "s3cret")


def test_default_credentials_are_accepted_when_explicitly_allowed() -> None:
    assert load_settings(ALLOW).allow_default_credentials is True


def test_a_tls_ca_file_that_does_not_exist_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**ALLOW, "MSTC_TLS_CA_FILE": "/nonexistent/ca.crt"})
    (line,) = caught.value.problems
    assert line.startswith("MSTC_TLS_CA_FILE: ")
    assert "/nonexistent/ca.crt" in line or "exist" in line


def test_a_tls_ca_file_is_optional() -> None:
    assert load_settings(ALLOW).tls_ca_file is None


def test_fault_switches_are_not_settings() -> None:
    """Test-only faults live in tests/support/faultinject, not in what production reads."""
    assert not [name for name in Settings.model_fields if name.startswith("fault")]
    aliases = [str(field.validation_alias) for field in Settings.model_fields.values()]
    assert not [alias for alias in aliases if alias.startswith("MSTC_FAULT")]
    # The former variables are ignored like any unrelated one: no value of theirs is refused.
    old = {"MSTC_FAULT_HALT_AT": "nonsense", "MSTC_FAULT_CRASH_ON_IMAGE": "example.invalid/x:1"}
    assert load_settings({**ALLOW, **old}) == load_settings(ALLOW)
