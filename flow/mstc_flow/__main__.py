"""`mstc-flow` / `python -m mstc_flow`: read the settings once, run the service until SIGTERM.

Exit codes: 0 after a clean stop, 2 for invalid settings (each bad variable named), 1 when a
server could not be reached at start.
"""

from __future__ import annotations

import logging
import sys

from mstc_flow.errors import ConfigError, TransientError
from mstc_flow.service import run
from mstc_flow.settings import load_settings

__all__ = ["main"]


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 2
    try:
        return run(settings)
    except TransientError as exc:
        print(f"mstc-flow could not start: {exc}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
