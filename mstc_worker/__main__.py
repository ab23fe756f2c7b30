"""`mstc-worker` and `python -m mstc_worker`: settings, logging, then the service.

Bad configuration ends the process at once with exit code 2 and one line per problem, naming
the environment variable, before anything connects anywhere. This is also where the service
gets its real broker, worker processes and HTTP port (`build_service`); unit tests give it
in-memory ones instead.
"""

from __future__ import annotations

import logging
import sys

from mstc_worker.broker import Broker
from mstc_worker.errors import ConfigError
from mstc_worker.http import HttpServer
from mstc_worker.logs import configure_logging
from mstc_worker.metrics import Metrics
from mstc_worker.pool import WorkerPool
from mstc_worker.ports import HttpEndpoints
from mstc_worker.service import Service
from mstc_worker.settings import Settings, load_settings

__all__ = ["build_service", "main"]

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
    return build_service(settings).run()


def build_service(settings: Settings) -> Service:
    """The service with its real collaborators, all made from `settings` (nothing started)."""
    metrics = Metrics()

    def http(endpoints: HttpEndpoints) -> HttpServer:
        return HttpServer(
            settings.http_port,
            metrics,
            is_live=endpoints.is_live,
            is_ready=endpoints.is_ready,
            execute=endpoints.execute,
            token=settings.http_token,
            host=settings.http_host,
            max_body_bytes=settings.max_body_bytes,
        )

    broker = Broker(
        settings, prefetch=settings.concurrency, on_reconnect=metrics.broker_reconnected
    )
    return Service(settings, broker=broker, pool=WorkerPool(settings), http=http, metrics=metrics)


if __name__ == "__main__":
    sys.exit(main())
