"""Kubernetes syntax rules: the same verdicts the API server would give."""

from __future__ import annotations

import pytest

from mstc_worker.kube_syntax import (
    annotation_key_problem,
    dns1123_label_problem,
    dns1123_subdomain_problem,
    is_env_name,
    is_quantity,
    label_key_problem,
    label_value_problem,
    sanitise_dns1123_label,
)


@pytest.mark.parametrize("name", ["a", "job-1", "1job", "a" * 63])
def test_valid_dns1123_labels_pass(name: str) -> None:
    assert dns1123_label_problem(name) is None


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "a" * 64, "é"])
def test_invalid_dns1123_labels_are_explained(name: str) -> None:
    assert dns1123_label_problem(name)


def test_subdomains_allow_dots_but_not_empty_parts() -> None:
    assert dns1123_subdomain_problem("mstc-minio.v1") is None
    assert dns1123_subdomain_problem("a..b")
    assert dns1123_subdomain_problem("x" * 254)


@pytest.mark.parametrize("key", ["team", "example.com/team", "a.b-c_d", "nvidia.com/gpu", "X" * 63])
def test_valid_label_keys_pass(key: str) -> None:
    assert label_key_problem(key) is None
    assert annotation_key_problem(key) is None


@pytest.mark.parametrize(
    ("key", "phrase"),
    [
        ("", "name part must not be empty"),
        ("/team", "prefix before '/' must not be empty"),
        ("Example.com/team", "prefix 'Example.com'"),
        ("example.com/", "name part must not be empty"),
        ("bad key", "name part 'bad key'"),
        ("-team", "name part '-team'"),
        ("x" * 64, "over the limit of 63"),
    ],
)
def test_invalid_label_keys_say_which_part_is_wrong(key: str, phrase: str) -> None:
    problem = label_key_problem(key)
    assert problem is not None
    assert phrase in problem


@pytest.mark.parametrize("value", ["", "v1", "A.b_c-d", "x" * 63])
def test_valid_label_values_pass(value: str) -> None:
    assert label_value_problem(value) is None


@pytest.mark.parametrize("value", ["-v", "v-", "a b", "x" * 64, "ü"])
def test_invalid_label_values_are_explained(value: str) -> None:
    assert label_value_problem(value)


@pytest.mark.parametrize(
    ("name", "valid"),
    [("PATH", True), ("_x1", True), ("my_var", True), ("1X", False), ("A-B", False), ("", False)],
)
def test_env_names_are_c_identifiers(name: str, valid: bool) -> None:
    assert is_env_name(name) is valid


@pytest.mark.parametrize(
    "text", ["1", "0.5", ".5", "500m", "2Gi", "128974848", "129e6", "1E3", "100Ki", "1.5", "1k"]
)
def test_quantities_kubernetes_accepts_pass(text: str) -> None:
    assert is_quantity(text)


@pytest.mark.parametrize(
    "text", ["", "-1", "4 GB", "4GB", "1.2.3", "Gi", "1gi", "m", "1K", "\u0661"]
)
def test_non_quantities_are_refused(text: str) -> None:
    assert not is_quantity(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test-job", "test-job"),
        ("My_Job.v2", "my-job-v2"),
        ("Café Résumé", "cafe-resume"),
        ("--x--", "x"),
        ("***", "job"),
        ("", "job"),
        ("日本語", "job"),
        ("123", "123"),
    ],
)
def test_sanitise_gives_recognisable_labels(text: str, expected: str) -> None:
    assert sanitise_dns1123_label(text) == expected


def test_sanitise_truncates_without_leaving_a_trailing_dash() -> None:
    assert sanitise_dns1123_label("abcde-fgh", max_length=6) == "abcde"
