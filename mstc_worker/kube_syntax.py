"""Kubernetes' syntax rules for names, label and annotation keys, env names and quantities.

Kept as pure functions in one place because two modules need the same rules:
`protocol` refuses a request whose labels or resources Kubernetes would refuse
(so the sender gets a precise rejection instead of a 422 from the API server after
the fact), and `manifest` must turn any jobName into a name Kubernetes accepts.
The rules mirror the API server's validation (k8s.io/apimachinery validation).
Problem functions return None when the text is valid, otherwise a phrase that
completes a sentence such as "label key 'x' is invalid: <phrase>".
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "DNS1123_LABEL_MAX",
    "DNS1123_SUBDOMAIN_MAX",
    "annotation_key_problem",
    "dns1123_label_problem",
    "dns1123_subdomain_problem",
    "is_env_name",
    "is_quantity",
    "label_key_problem",
    "label_value_problem",
    "qualified_name_problem",
    "sanitise_dns1123_label",
]

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_NAME_PART_MAX = 63

# [0-9] rather than \d: in str patterns \d also matches non-ASCII digits, which
# Kubernetes refuses.
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAME_PART = re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A non-negative Kubernetes quantity: a decimal number with an optional binary-SI,
# decimal-SI or exponent suffix. Negative amounts are meaningless for resources.
_QUANTITY = re.compile(
    r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][-+]?[0-9]+)?"
)
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9]+")


def dns1123_label_problem(text: str) -> str | None:
    """Why `text` is not a DNS-1123 label (container names, namespaces), or None."""
    if len(text) > DNS1123_LABEL_MAX:
        return f"it is {len(text)} characters long, over the limit of {DNS1123_LABEL_MAX}"
    if not _DNS1123_LABEL.fullmatch(text):
        return (
            "it must consist of lower-case letters, digits and '-', "
            "and start and end with a letter or digit"
        )
    return None


def dns1123_subdomain_problem(text: str) -> str | None:
    """Why `text` is not a DNS-1123 subdomain (Secret names, key prefixes), or None."""
    if len(text) > DNS1123_SUBDOMAIN_MAX:
        return f"it is {len(text)} characters long, over the limit of {DNS1123_SUBDOMAIN_MAX}"
    if not _DNS1123_SUBDOMAIN.fullmatch(text):
        return (
            "it must consist of lower-case letters, digits, '-' and '.', "
            "with each dot-separated part starting and ending with a letter or digit"
        )
    return None


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a qualified name ``[prefix/]name``, or None.

    Label keys, annotation keys and resource names such as ``nvidia.com/gpu`` all
    follow this rule.
    """
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "the prefix before '/' must not be empty"
        problem = dns1123_subdomain_problem(prefix)
        if problem is not None:
            return f"the prefix '{prefix}' is not a DNS subdomain: {problem}"
    if not name:
        return "the name part must not be empty"
    if len(name) > _NAME_PART_MAX:
        return f"the name part is {len(name)} characters long, over the limit of {_NAME_PART_MAX}"
    if not _NAME_PART.fullmatch(name):
        return (
            f"the name part '{name}' must consist of letters, digits, '-', '_' and '.', "
            "and start and end with a letter or digit"
        )
    return None


def label_key_problem(key: str) -> str | None:
    """Why `key` cannot be a label key, or None."""
    return qualified_name_problem(key)


def annotation_key_problem(key: str) -> str | None:
    """Why `key` cannot be an annotation key, or None (same rule as label keys)."""
    return qualified_name_problem(key)


def label_value_problem(value: str) -> str | None:
    """Why `value` cannot be a label value, or None; an empty value is valid."""
    if len(value) > _NAME_PART_MAX:
        return f"it is {len(value)} characters long, over the limit of {_NAME_PART_MAX}"
    if value and not _NAME_PART.fullmatch(value):
        return (
            "it must consist of letters, digits, '-', '_' and '.', "
            "and start and end with a letter or digit"
        )
    return None


def is_env_name(name: str) -> bool:
    """Whether `name` is a portable environment variable name (a C identifier).

    Kubernetes accepts more, but shells and most programs only see these.
    """
    return _ENV_NAME.fullmatch(name) is not None


def is_quantity(text: str) -> bool:
    """Whether `text` is a non-negative Kubernetes quantity such as ``500m`` or ``2Gi``."""
    return _QUANTITY.fullmatch(text) is not None


def sanitise_dns1123_label(text: str, *, max_length: int = DNS1123_LABEL_MAX) -> str:
    """Turn any text into a DNS-1123 label of at most `max_length` characters.

    Accents are folded to ASCII (``Café`` -> ``cafe``) so names stay recognisable;
    every other run of characters outside ``[a-z0-9]`` becomes one '-'. When
    nothing usable remains, the result is ``job``.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = _NOT_LABEL_CHARS.sub("-", folded.lower()).strip("-")
    cleaned = cleaned[:max_length].rstrip("-")
    return cleaned or "job"
