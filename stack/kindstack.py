"""The same stack on a laptop with Docker: kind for Kubernetes, testcontainers for the rest.

Owns the `MSTC_TEST_CLUSTER=kind` path. The control plane is kind's; KWOK runs here as a local
process against it with the project's own Stage definitions, and the real kind node is cordoned,
so a Job's pod behaves exactly as on the local stack (annotations choose its fate). RabbitMQ
(with the management and MQTT plugins) and MinIO come from testcontainers. It yields the same
connection settings, in the same variable names, as `localstack.connection_env`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from testcontainers.minio import MinioContainer
from testcontainers.rabbitmq import RabbitMqContainer

import localstack

RABBITMQ_IMAGE = "rabbitmq:3.13-management"
MINIO_IMAGE = "minio/minio:RELEASE.2025-09-07T16-13-09Z"


class KindStack:
    """Context manager: create everything on enter, remove everything on exit."""

    def __init__(self, cfg: localstack.Config) -> None:
        self.cfg = cfg
        self.name = f"mstc-test-{os.getpid()}"
        self.dir = Path(tempfile.mkdtemp(prefix="mstc-kind-"))
        self.local = localstack.Config(self.dir, cfg.cache_dir, cfg.ports)
        self.rabbit: RabbitMqContainer | None = None
        self.minio: MinioContainer | None = None

    def __enter__(self) -> dict[str, str]:
        try:
            return self._up()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _up(self) -> dict[str, str]:
        kubeconfig = self.local.kubeconfig
        subprocess.run(
            [
                "kind",
                "create",
                "cluster",
                "--name",
                self.name,
                "--kubeconfig",
                str(kubeconfig),
                "--wait",
                "180s",
            ],
            check=True,
        )
        # Pods go to the KWOK node only, as on the local stack.
        for node in localstack.kubectl(self.local, "get", "nodes", "-o", "name").split():
            localstack.kubectl(self.local, "cordon", node)
        localstack.ensure_pki(self.local)  # KWOK's serving cert
        localstack.up_kwok(self.local)

        plugins = self.dir / "enabled_plugins"
        plugins.write_text("[rabbitmq_management,rabbitmq_mqtt].\n")
        self.rabbit = (
            RabbitMqContainer(
                RABBITMQ_IMAGE, username=localstack.AMQP_USER, password=localstack.AMQP_PASS
            )
            .with_exposed_ports(5672, 15672, 1883)
            .with_volume_mapping(str(plugins), "/etc/rabbitmq/enabled_plugins")
        )
        self.rabbit.start()
        self.minio = MinioContainer(
            MINIO_IMAGE, access_key=localstack.S3_USER, secret_key=localstack.S3_PASS
        )
        self.minio.start()

        rabbit_host = self.rabbit.get_container_host_ip()
        amqp_port = self.rabbit.get_exposed_port(5672)
        s3_host = self.minio.get_container_host_ip()
        s3_port = self.minio.get_exposed_port(9000)
        helm = shutil.which("helm") or str(localstack.binary(self.cfg, "helm", "helm"))
        env = localstack.connection_env(self.local)
        env.update(
            {
                "WORK_QUEUE_HOST": rabbit_host,
                "WORK_QUEUE_PORT": str(amqp_port),
                "MINIO_SERVICE_HOST": s3_host,
                "MINIO_SERVICE_PORT": str(s3_port),
                "MSTC_AMQP_URL": (
                    f"amqp://{localstack.AMQP_USER}:{localstack.AMQP_PASS}"
                    f"@{rabbit_host}:{amqp_port}/%2F"
                ),
                "MSTC_S3_ENDPOINT": f"http://{s3_host}:{s3_port}",
                "MSTC_RABBITMQ_MANAGEMENT_URL": (
                    f"http://{rabbit_host}:{self.rabbit.get_exposed_port(15672)}"
                ),
                "MSTC_MQTT_PORT": str(self.rabbit.get_exposed_port(1883)),
                "HELM_BIN": helm,
            }
        )
        return env

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        localstack.stop(self.local, "kwok")
        for container in (self.rabbit, self.minio):
            if container is not None:
                container.stop()
        subprocess.run(["kind", "delete", "cluster", "--name", self.name], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
