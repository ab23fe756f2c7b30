"""Each package's public names, exactly: a name added to or dropped from an API is a decision.

A package's `__all__` is its public API; everything else (submodules, helpers they export to
each other) is internal. These tests list the API by hand, so that a change to it shows up as a
change here, and check that the package exposes nothing public beyond it and that its version
is the one written in its pyproject.toml.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import ModuleType

import pytest

import mstc_client
import mstc_worker

ROOT = Path(__file__).resolve().parents[2]

CLIENT_API = [
    "BrokerUnreachable",
    "CancelAnswer",
    "Client",
    "ClientClosed",
    "ClientConfig",
    "ConfigError",
    "InputError",
    "JobFailed",
    "JobHandle",
    "JobRequest",
    "JobTimedOut",
    "MstcClientError",
    "Progress",
    "Reply",
    "RequestRejected",
    "Resources",
    "Result",
    "RunRequest",
    "Status",
    "StorageError",
    "StorageUnreachable",
    "TaskNotJson",
    "TaskQueue",
    "TaskQueueError",
    "WaitTimeout",
    "Waiting",
    "__version__",
]

WORKER_API = ["__version__"]

PACKAGES = [
    pytest.param(mstc_client, CLIENT_API, ROOT / "client" / "pyproject.toml", id="mstc_client"),
    pytest.param(mstc_worker, WORKER_API, ROOT / "pyproject.toml", id="mstc_worker"),
]


@pytest.mark.parametrize(("package", "api", "pyproject"), PACKAGES)
def test_all_is_exactly_the_public_api(
    package: ModuleType, api: list[str], pyproject: Path
) -> None:
    assert sorted(package.__all__) == api
    assert len(set(package.__all__)) == len(package.__all__)


@pytest.mark.parametrize(("package", "api", "pyproject"), PACKAGES)
def test_every_listed_name_exists(package: ModuleType, api: list[str], pyproject: Path) -> None:
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert missing == []


@pytest.mark.parametrize(("package", "api", "pyproject"), PACKAGES)
def test_nothing_public_is_left_unlisted(
    package: ModuleType, api: list[str], pyproject: Path
) -> None:
    # Submodules become attributes of the package once imported; they are not names of its API.
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public - set(package.__all__) == set()


@pytest.mark.parametrize(("package", "api", "pyproject"), PACKAGES)
def test_version_is_the_one_in_pyproject(
    package: ModuleType, api: list[str], pyproject: Path
) -> None:
    with pyproject.open("rb") as file:
        written = tomllib.load(file)["project"]["version"]
    assert package.__version__ == written
