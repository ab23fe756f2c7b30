"""mstc-worker: runs queued container requests as Kubernetes Jobs.

A wire-compatible Python rewrite of the Java MSTC cloud worker. The public surface is
deliberately small; see the README for how requests, Jobs and replies relate.
"""

from importlib import metadata as _metadata

__all__ = ["__version__"]

# The version is written once, in pyproject.toml; the installed metadata carries it.
__version__ = _metadata.version("mstc-worker")
