"""mstc-client: submit jobs to an mstc worker and collect their results.

Only the package's frame exists so far; the client itself is the subject of its own issue.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
