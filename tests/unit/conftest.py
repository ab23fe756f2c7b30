"""Fixtures for the unit tests: settings built from explicit env mappings, and request bodies.

Settings always come from a mapping given here, never from the process
environment, so a developer's or CI runner's MSTC_* variables cannot change a result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from mstc_worker.settings import Settings, load_settings

# The local-stack credentials are the defaults, which load_settings refuses unless allowed.
BASE_ENV = {"MSTC_ALLOW_DEFAULT_CREDENTIALS": "true"}

MakeSettings = Callable[..., Settings]
MakeBody = Callable[..., bytes]


@pytest.fixture
def make_settings() -> MakeSettings:
    """Settings from BASE_ENV plus the given environment variables."""

    def make(**env: str) -> Settings:
        return load_settings({**BASE_ENV, **env})

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


VALID_REQUEST: dict[str, Any] = {
    "image": "mstc/python-test:latest",
    "jobName": "test-job",
    "inputBucket": "test-bucket",
}


@pytest.fixture
def make_body() -> MakeBody:
    """A JSON body: a valid request with the given fields replaced or added, and the
    fields named in `without` left out."""

    def make(*, without: tuple[str, ...] = (), **fields: Any) -> bytes:
        data = {**VALID_REQUEST, **fields}
        return json.dumps({k: v for k, v in data.items() if k not in without}).encode()

    return make
