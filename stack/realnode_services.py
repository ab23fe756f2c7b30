"""Services on the stack's real node: kube-proxy, cluster DNS, and the API server for pods.

Owns what makes a Service work for pods on the real node, and taking all of it away again:

- ``kube-proxy`` (built with the kubelet) in nftables mode, for this node only. Its rules live
  in its own nftables tables (``ip kube-proxy``, ``ip6 kube-proxy``), which ``down`` deletes
  whole; it touches no iptables chain. It masquerades all Service traffic, so a reply from a
  pod on the same bridge comes back through the node (no ``br_netfilter`` needed). Pods reach
  the Service range through the node: the CNI network routes it to the bridge's address.
- CoreDNS (built from its Go module by ``realnode_build.sh``, cached by version) on the node's
  address, port 53, answering for ``cluster.local`` from the API server; pods get it as their
  nameserver through the kubelet's ``clusterDNS``. Other names get no answer: nothing leaves.
- The API server for in-cluster clients: it listens on 127.0.0.1 only, so a relay (socat)
  serves it on the node's address and an EndpointSlice of the ``kubernetes`` Service points
  there (the API server's own endpoint reconciler is off in this stack). Its certificate
  already names 10.96.0.1, so pods verify it as usual.
- Forwarding on the node's bridge only (the machine's ``ip_forward`` stays as it is) and a
  route of the Service range onto the bridge; both go with the bridge. kube-proxy's tables and
  that route have fixed names, so one real node per machine (a second stack's fails to start).

Stdlib only, like ``localstack.py``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import localstack
import realnode_files as files
from localstack import Config, StackError

KUBE_PROXY, COREDNS, API_RELAY = "realnode-kube-proxy", "realnode-coredns", "realnode-api-relay"
PARTS_IN_STOP_ORDER = [KUBE_PROXY, COREDNS, API_RELAY]
NFT_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))
COREDNS_VERSION = "v1.14.7"


def _ports(lay: files.Layout) -> dict[str, int]:
    return {
        "coredns_ready": 10354 + lay.offset,
        "proxy_healthz": 10356 + lay.offset,
        "proxy_metrics": 10357 + lay.offset,
    }


def coredns_binary(cfg: Config) -> Path:
    return cfg.cache_dir / f"coredns-{COREDNS_VERSION}" / "coredns"


def _routing(lay: files.Layout) -> None:
    """Forwarding on the bridge only, and the Service range onto it: the host's own
    connections to a Service (kube-proxy's output rules) and to an address no Service has
    stay on this machine instead of taking the default route. Both go with the bridge."""
    Path(f"/proc/sys/net/ipv4/conf/{lay.bridge}/forwarding").write_text("1\n")
    argv = ["ip", "route", "replace", files.SERVICE_CIDR, "dev", lay.bridge, "src", lay.node_ip]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise StackError(f"real node: {' '.join(argv)}: {out.stderr.strip()}")


def _api_relay(cfg: Config, lay: files.Layout) -> None:
    port = cfg.ports["apiserver"]
    argv = ["socat", f"TCP-LISTEN:{port},bind={lay.node_ip},fork,reuseaddr",
            f"TCP:127.0.0.1:{port}"]  # fmt: skip
    localstack.start(cfg, API_RELAY, argv)
    slice_doc = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "mstc-real-node",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [lay.node_ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
    localstack.kubectl(cfg, "apply", "--server-side", "-f", "-", stdin=json.dumps(slice_doc))


def corefile(lay: files.Layout, kubeconfig: Path) -> str:
    return f""".:53 {{
    bind {lay.node_ip}
    errors
    ready 127.0.0.1:{_ports(lay)["coredns_ready"]}
    kubernetes {files.CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {kubeconfig} mstc-local
    }}
}}
"""


def _coredns(cfg: Config, lay: files.Layout, kubeconfig: Path) -> None:
    conf = lay.root / "coredns" / "Corefile"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(corefile(lay, kubeconfig))
    localstack.start(cfg, COREDNS, [str(coredns_binary(cfg)), "-conf", str(conf)])
    url = f"http://127.0.0.1:{_ports(lay)['coredns_ready']}/ready"
    localstack.wait_for("CoreDNS", lambda: localstack.http_ok(url), 60, cfg, COREDNS)


def kube_proxy_argv(cfg: Config, lay: files.Layout, kubeconfig: Path) -> list[str]:
    ports = _ports(lay)
    return [
        str(localstack.binary(cfg, "kubernetes", "kube-proxy")),
        "--proxy-mode=nftables",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={files.NODE_NAME}",
        f"--bind-address={lay.node_ip}",
        f"--cluster-cidr={lay.subnet}",
        "--masquerade-all",
        f"--nodeport-addresses={lay.node_ip}/32",
        f"--healthz-bind-address=127.0.0.1:{ports['proxy_healthz']}",
        f"--metrics-bind-address=127.0.0.1:{ports['proxy_metrics']}",
        # Leave the machine's conntrack settings as they are.
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        "--v=1",
    ]


def _kube_proxy(cfg: Config, lay: files.Layout, kubeconfig: Path) -> None:
    localstack.start(cfg, KUBE_PROXY, kube_proxy_argv(cfg, lay, kubeconfig))
    url = f"http://127.0.0.1:{_ports(lay)['proxy_healthz']}/healthz"
    localstack.wait_for("kube-proxy", lambda: localstack.http_ok(url), 60, cfg, KUBE_PROXY)


def up(cfg: Config, lay: files.Layout) -> None:
    """Once the node is registered (kube-proxy serves a node that exists, and says it is
    healthy only then); returns when all are serving."""
    if not coredns_binary(cfg).exists():
        raise StackError("real node: no CoreDNS binary; run `make realnode-build`")
    kubeconfig = lay.root / "services.kubeconfig"
    localstack.write_kubeconfig(cfg, kubeconfig, "admin")
    _routing(lay)
    _api_relay(cfg, lay)
    _coredns(cfg, lay, kubeconfig)
    _kube_proxy(cfg, lay, kubeconfig)


def nft_tables() -> list[str]:
    """kube-proxy's nftables tables now on the machine ("family name")."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    listed = {line.removeprefix("table ").strip() for line in out.stdout.splitlines()}
    return [f"{fam} {name}" for fam, name in NFT_TABLES if f"{fam} {name}" in listed]


def down(cfg: Config) -> None:
    for name in PARTS_IN_STOP_ORDER:
        localstack.stop(cfg, name)
    for table in nft_tables():
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["nft", "delete", "table", *table.split()], check=True,
                           capture_output=True, timeout=30)  # fmt: skip
    left = nft_tables()
    if left:
        raise StackError(f"real node: nftables tables left: {', '.join(left)}")
