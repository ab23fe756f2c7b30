"""`mstc-worker` and `python -m mstc_worker`: settings, logging, then the service.

`mstc-worker release [--timeout SECONDS]` instead lets go of every Job the worker holds in
its namespace, answering what it still owes (see `release`); the chart's pre-delete hook runs
it. `mstc-worker add-client-user` makes the clients' MinIO user (key from MSTC_CLIENT_ACCESS_KEY
and MSTC_CLIENT_SECRET_KEY, see `storage.add_client_user`); the chart's post-install hook runs
it. All read the same settings.

Bad configuration ends the process at once with exit code 2 and one line per problem, naming
the environment variable, before anything connects anywhere. This is also where the service
gets its real broker, worker processes and HTTP port (`build_service`); unit tests give it
in-memory ones instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from mstc_worker.broker import Broker
from mstc_worker.errors import ConfigError, PermanentError, TransientError
from mstc_worker.http import HttpServer
from mstc_worker.logs import configure_logging
from mstc_worker.metrics import Metrics
from mstc_worker.pool import WorkerPool
from mstc_worker.ports import HttpEndpoints
from mstc_worker.release import release_all
from mstc_worker.service import Service
from mstc_worker.settings import Settings, load_settings
from mstc_worker.storage import add_client_user

__all__ = ["build_service", "main"]

log = logging.getLogger("mstc_worker")


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    command = _parse(args) if args else None
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"mstc-worker: bad configuration:\n{exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings, process_name="main")
    if command is not None and command.command == "add-client-user":
        return _add_client_user(settings)
    if command is not None:
        return _release(settings, command.timeout)
    log.info(
        "mstc-worker starting: broker %s, namespace %s, up to %d jobs in flight",
        settings.amqp_url_for_logs,
        settings.namespace,
        settings.concurrency,
    )
    return build_service(settings).run()


def _parse(args: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mstc-worker", description="The MSTC cloud worker.")
    commands = parser.add_subparsers(dest="command", required=True)
    release = commands.add_parser(
        "release",
        help="let go of every Job the worker holds (its finalizer), answering what is owed",
    )
    release.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for live workers' claims before letting go regardless (60)",
    )
    commands.add_parser(
        "add-client-user",
        help="make the clients' MinIO user (MSTC_CLIENT_ACCESS_KEY, MSTC_CLIENT_SECRET_KEY)",
    )
    return parser.parse_args(args)


def _add_client_user(settings: Settings) -> int:
    # Not worker settings: only this command reads them (the chart's hook sets them).
    access_key = os.environ.get("MSTC_CLIENT_ACCESS_KEY", "")
    secret_key = os.environ.get("MSTC_CLIENT_SECRET_KEY", "")
    if len(access_key) < 3 or len(secret_key) < 8:
        log.error(
            "add-client-user: set MSTC_CLIENT_ACCESS_KEY (3+) and MSTC_CLIENT_SECRET_KEY (8+)"
        )
        return 2
    try:
        add_client_user(settings, access_key, secret_key)
    except (TransientError, PermanentError) as exc:
        log.error("add-client-user: %s", exc)
        return 1
    log.info("add-client-user: MinIO user %s has the policy mstc-client", access_key)
    return 0


def _release(settings: Settings, timeout_s: float) -> int:
    log.info("mstc-worker release: namespace %s, up to %.0f s", settings.namespace, timeout_s)
    try:
        left = release_all(settings, timeout_s=timeout_s)
    except (TransientError, PermanentError) as exc:
        log.error("mstc-worker release: the worker's Jobs could not be released: %s", exc)
        return 1
    if left:
        log.error("%d Job(s) still hold the finalizer; run release again", left)
    return 1 if left else 0


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
