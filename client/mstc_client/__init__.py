"""mstc-client: run a container on your files through an mstc worker, and get the results back.

    from mstc_client import Client

    with Client() as client:  # settings from the environment, as the worker reads them
        result = client.run("python:3.12", "my-analysis", inputs=["data/"], output_dir="out")
        result.raise_for_status()

`Client.submit` is the non-blocking, thread-safe building block (one `JobHandle` per request);
`Client.run` is the whole round trip of a `RunRequest` (or of the same fields given as
arguments, as above). The `mstc` command (mstc_client.cli) wraps both. `TaskQueue`
(mstc_client.tasks) is the task queue a Job's pods share.

The names below (`__all__`) are the library's public API, guarded by tests/unit/test_public_api.py;
the submodules and anything not listed here are internal and may change.
"""

from importlib import metadata as _metadata

from mstc_client.client import Client
from mstc_client.config import ClientConfig
from mstc_client.control import CancelAnswer
from mstc_client.errors import (
    BrokerUnreachable,
    ClientClosed,
    ConfigError,
    InputError,
    JobFailed,
    JobTimedOut,
    MstcClientError,
    RequestRejected,
    StorageError,
    StorageUnreachable,
    TaskNotJson,
    TaskQueueError,
    WaitTimeout,
)
from mstc_client.handle import JobHandle
from mstc_client.protocol import JobRequest, Reply, Resources, Status
from mstc_client.result import Result
from mstc_client.run_request import RunRequest
from mstc_client.storage import Progress
from mstc_client.tasks import TaskQueue
from mstc_client.waiting import Waiting

__all__ = [
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

# The version is written once, in client/pyproject.toml; the installed metadata carries it.
__version__ = _metadata.version("mstc-client")
