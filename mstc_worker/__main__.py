"""`mstc-worker` and `python -m mstc_worker`: settings, logging, then the service.

Bad configuration ends the process at once with exit code 2 and one line per problem, naming
the environment variable, before anything connects anywhere.
"""

from __future__ import annotations

import logging
import sys

from mstc_worker.errors import ConfigError
from mstc_worker.logs import configure_logging
from mstc_worker.service import Service
from mstc_worker.settings import load_settings

__all__ = ["main"]

log = logging.getLogger("mstc_worker")


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"mstc-worker: bad configuration:\n{exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings, process_name="main")
    log.info(
        "mstc-worker starting: broker %s, namespace %s, up to %d jobs in flight",
        settings.amqp_url_for_logs,
        settings.namespace,
        settings.concurrency,
    )
    return Service(settings).run()


if __name__ == "__main__":
    sys.exit(main())
