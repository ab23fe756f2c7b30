"""The `mstc` command (placeholder until the client issue lands)."""

import sys

__all__ = ["main"]


def main() -> int:
    print("mstc: not implemented yet", file=sys.stderr)  # noqa: T201
    return 1
