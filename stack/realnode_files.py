"""What the real node is made of on disk: its layout, addresses, certificates and configs.

Owns every name and number of the stack's real node (directories, ports, the bridge, the pod
subnet, the cgroup root) and the files its programs read (containerd's config, the CNI
network, the kubelet's config and certificates). Kept apart from ``realnode.py``, which runs
the programs, so that the layout is in one place and ``down`` finds exactly what ``up`` made.

Everything is derived from the stack's port offset, so two stacks (two offsets) on one machine
get two bridges, two subnets and two cgroup roots. Stdlib only, like ``localstack.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import localstack

NODE_NAME = "mstc-real-node"
# Pods meant for the real node tolerate this taint and select this label; every other pod
# (the whole KWOK-based suite) cannot land on it.
TAINT_KEY = "mstc.io/real-node"
# The API server's --service-cluster-ip-range (localstack.py) and the domain CoreDNS serves.
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_FS = Path("/sys/fs/cgroup")
# A namespace with these annotations sends all its pods to the real node (the API server's
# PodNodeSelector and PodTolerationRestriction admission plugins add selector and toleration):
# how a worker's Jobs, which carry neither, run there.
NAMESPACE_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/node-selector": f"{TAINT_KEY}=true",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    ),
}


@dataclass(frozen=True)
class Layout:
    """Where one stack's real node keeps its state, and which addresses it uses."""

    cfg: localstack.Config

    @property
    def offset(self) -> int:
        return self.cfg.ports["apiserver"] - localstack.DEFAULT_PORTS["apiserver"]

    @property
    def index(self) -> int:
        """The third octet of the pod subnet: one per stack (offsets are multiples of 100)."""
        return (self.offset // 100) % 250

    @property
    def root(self) -> Path:
        return self.cfg.state_dir / "realnode"

    @property
    def subnet(self) -> str:
        return f"10.200.{self.index}.0/24"

    @property
    def node_ip(self) -> str:
        """The bridge's own address: the node's InternalIP and the pods' way to the host."""
        return f"10.200.{self.index}.1"

    @property
    def bridge(self) -> str:
        return f"mstcbr{self.index}"

    @property
    def network(self) -> str:
        return f"mstc-realnode-{self.index}"

    @property
    def cgroup_root(self) -> str:
        return f"mstc-realnode-{self.index}"

    def cgroup_dirs(self) -> list[Path]:
        """The kubelet's cgroup root in every hierarchy it checks: each v1 hierarchy mounted
        under /sys/fs/cgroup (named ones too), or the one v2 tree."""
        if (CGROUP_FS / "cgroup.controllers").exists():
            return [CGROUP_FS / self.cgroup_root]
        hierarchies = [p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink()]
        return [h / self.cgroup_root for h in sorted(hierarchies) if os.path.ismount(h)]

    @property
    def kubelet_port(self) -> int:
        return 10350 + self.offset  # KWOK serves on 10250 + offset

    @property
    def kubelet_healthz_port(self) -> int:
        return 10348 + self.offset

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def images_file(self) -> Path:
        """The image references imported into the node, by role (pause, base)."""
        return self.root / "images.json"


def _openssl_cert(cfg: localstack.Config, name: str, subject: str, ext: str | None) -> None:
    pki = cfg.pki
    if (pki / f"{name}.crt").exists():
        return
    localstack.openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=pki,
    )
    cmd = [
        "openssl",
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        f"{name}.crt.tmp",
    ]
    if ext:
        cmd += ["-extfile", "/dev/stdin"]
    subprocess.run(cmd, cwd=pki, input=ext or "", text=True, check=True, capture_output=True)
    (pki / f"{name}.crt.tmp").rename(pki / f"{name}.crt")


def ensure_certs(lay: Layout) -> None:
    """The kubelet's client certificate (its node identity) and its serving certificate."""
    _openssl_cert(lay.cfg, "realnode-kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}", None)
    _openssl_cert(
        lay.cfg,
        "realnode-serving",
        f"/CN={NODE_NAME}",
        f"subjectAltName=IP:{lay.node_ip},DNS:{NODE_NAME}",
    )


def containerd_config(lay: Layout, pause_ref: str) -> str:
    r = lay.root
    return f"""version = 2
root = "{r / "containerd" / "root"}"
state = "{r / "containerd" / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{lay.containerd_socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{r / "containerd" / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_ref}"
  # The sandbox may not lower oom_score_adj here; without this runc fails to start it.
  restrict_oom_score_adj = true
  # Network namespaces under the stack's state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{r / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{r / "cni" / "net.d"}"
    max_conf_num = 1
"""


def cni_config(lay: Layout) -> str:
    """One bridge network with no default route and no masquerade: pods reach each other, the
    host's bridge address and the stack's Service range (through the node, where kube-proxy's
    rules send it to a pod or the host), nothing beyond this machine."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": lay.network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": lay.bridge,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": lay.subnet, "gateway": lay.node_ip}]],
                        # Service addresses only, through the node (kube-proxy's rules there).
                        "routes": [{"dst": SERVICE_CIDR}],
                        "dataDir": str(lay.root / "cni" / "ipam"),
                    },
                }
            ],
        },
        indent=2,
    )


def kubelet_config(lay: Layout) -> str:
    pki = lay.cfg.pki
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": lay.node_ip,
        "port": lay.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": lay.kubelet_healthz_port,
        "tlsCertFile": str(pki / "realnode-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "realnode-serving.key"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        # Only holders of the stack's client certificates get this far (the API server's).
        "authorization": {"mode": "AlwaysAllow"},
        # This machine: cgroup v1 through cgroupfs, swap may be on.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupRoot": f"/{lay.cgroup_root}",
        "containerRuntimeEndpoint": f"unix://{lay.containerd_socket}",
        "podLogsDir": str(lay.root / "pod-logs"),
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        # The kubelet leaves the machine's iptables alone; nothing here needs its chains.
        "makeIPTablesUtilChains": False,
        "resolvConf": "",
        # The stack's CoreDNS answers for Services on the node's address (realnode_services).
        "clusterDNS": [lay.node_ip],
        "clusterDomain": CLUSTER_DOMAIN,
        "maxPods": 30,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusUpdateFrequency": "5s",
    }
    return json.dumps(doc, indent=2)


def kubelet_argv(lay: Layout, kubelet: Path) -> list[str]:
    return [
        str(kubelet),
        f"--config={lay.root / 'kubelet.json'}",
        f"--kubeconfig={lay.root / 'kubelet.kubeconfig'}",
        f"--root-dir={lay.root / 'kubelet'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={lay.node_ip}",
        f"--node-labels={TAINT_KEY}=true",
        "--v=1",
    ]
