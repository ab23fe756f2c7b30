"""mstc-client: run a container on your files through an mstc worker, and get the results back.

    from mstc_client import Client

    with Client() as client:  # settings from the environment, as the worker reads them
        result = client.run("python:3.12", "my-analysis", inputs=["data/"], output_dir="out")
        result.raise_for_status()

`Client.submit` is the non-blocking, thread-safe building block (one `JobHandle` per request);
`Client.run` is the whole round trip. The `mstc` command (mstc_client.cli) wraps both.
"""

from mstc_client.client import DEFAULT_TIMEOUT_MINUTES, Client, Staged, Waiting, wait_budget
from mstc_client.config import ClientConfig
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
    WaitTimeout,
)
from mstc_client.handle import JobHandle
from mstc_client.protocol import JobRequest, Reply, Resources, Status, parse_reply
from mstc_client.result import Result, error_for
from mstc_client.storage import Progress, input_files, local_path_for, new_prefix

__all__ = [
    "DEFAULT_TIMEOUT_MINUTES",
    "BrokerUnreachable",
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
    "Staged",
    "Status",
    "StorageError",
    "StorageUnreachable",
    "WaitTimeout",
    "Waiting",
    "__version__",
    "error_for",
    "input_files",
    "local_path_for",
    "new_prefix",
    "parse_reply",
    "wait_budget",
]

__version__ = "0.1.0"
