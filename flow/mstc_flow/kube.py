"""The flow service's Kubernetes boundary: reading one key of a ConfigMap (the catalog).

A catalog kept in a ConfigMap is edited with kubectl or helm and read here with its
`resourceVersion`, which changes on every write, so the catalog keeper can tell a new
version from the one it has. Only this module imports the kubernetes library; its
exceptions become the flow's: 404 is `NotFound`, 401/403 (RBAC: the chart grants `get` on
ConfigMaps) `PermanentError`, anything else (API server down, 5xx, timeouts)
`TransientError`.

The API client is made once by `kube_api_client()` (in-cluster credentials in a pod, else
the kubeconfig of KUBECONFIG or ~/.kube/config) and passed to `ConfigMapReader`.
"""

from __future__ import annotations

from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from mstc_flow.errors import ConfigError, FlowError, NotFound, PermanentError, TransientError

__all__ = ["ConfigMapReader", "kube_api_client"]

_REQUEST_TIMEOUT = (5, 30)  # seconds to connect, to read: a poll must not hang


def kube_api_client() -> Any:
    """An API client: in-cluster credentials when in a pod, else the local kubeconfig."""
    try:
        k8s_config.load_incluster_config()
        return k8s.ApiClient()
    except ConfigException:
        pass
    try:
        return k8s_config.new_client_from_config()
    except (ConfigException, OSError) as exc:
        raise ConfigError(
            [f"MSTC_FLOW_CATALOG names a ConfigMap, but no Kubernetes credentials: {exc}"]
        ) from exc


class ConfigMapReader:
    """Reads one key of a ConfigMap and the ConfigMap's resourceVersion."""

    def __init__(self, api_client: Any) -> None:
        self._core = k8s.CoreV1Api(api_client)

    def read(self, namespace: str, name: str, key: str | None) -> tuple[str, str]:
        """(the key's text, the resourceVersion). Without `key`, the ConfigMap's only key."""
        where = f"ConfigMap {namespace}/{name}"
        try:
            config_map = self._core.read_namespaced_config_map(
                name, namespace, _request_timeout=_REQUEST_TIMEOUT
            )
        except k8s.ApiException as exc:
            raise _api_error(exc, where) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(
                f"Cannot reach the Kubernetes API for {where} ({type(exc).__name__}); retrying."
            ) from exc
        data: dict[str, str] = dict(config_map.data or {})
        return _pick(data, key, where), str(config_map.metadata.resource_version)


def _pick(data: dict[str, str], key: str | None, where: str) -> str:
    if key is None:
        if len(data) != 1:
            raise NotFound(
                f"{where} has {len(data)} keys ({', '.join(sorted(data)) or 'none'}); "
                "name the one holding the catalog: configmap:NAMESPACE/NAME/KEY."
            )
        return next(iter(data.values()))
    if key not in data:
        raise NotFound(f"{where} has no key {key!r} (it has: {', '.join(sorted(data)) or 'none'}).")
    return data[key]


def _api_error(exc: Any, where: str) -> FlowError:
    if exc.status == 404:
        return NotFound(f"{where} does not exist; create it or fix MSTC_FLOW_CATALOG.")
    if exc.status in (401, 403):
        return PermanentError(
            f"The Kubernetes API refused to read {where} ({exc.status} {exc.reason}); "
            "the service account needs 'get' on configmaps in that namespace."
        )
    return TransientError(f"The Kubernetes API failed to read {where} ({exc.status}); retrying.")
