"""mstc-worker: runs queued container requests as Kubernetes Jobs.

A wire-compatible Python rewrite of the Java MSTC cloud worker. The public surface is
deliberately small; see the README for how requests, Jobs and replies relate.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
