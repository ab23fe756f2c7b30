"""The local stack's real node: a kubelet on containerd, runc and a bridge CNI network.

An optional second node kind beside KWOK's simulated node (``MSTC_STACK_REAL_NODE=1``), on
which pods run as real containers. Owns bringing it up after the control plane (network,
containerd, images, kubelet, node Ready) and taking it down so that no process, mount,
network namespace, bridge, iptables rule or cgroup of it is left on the machine.

Pods land on it only when they ask: the node is registered with the taint
``mstc.io/real-node=true:NoSchedule`` and the label ``mstc.io/real-node=true``, so a pod
needs that toleration and that nodeSelector; everything else keeps going to KWOK's node. A
namespace annotated with ``realnode_files.NAMESPACE_ANNOTATIONS`` gets both for all its pods
(admission plugins this mode turns on): that is how a worker's Jobs run there. Pods reach the
stack's MinIO and RabbitMQ's AMQP port (both 127.0.0.1 only) at the node's address, through a
relay (socat) each on the same port (task queues: a Job's pods log in to RabbitMQ);
Services and their names work through ``realnode_services`` (kube-proxy, CoreDNS).
Images are never pulled: ``stack/images/build.sh`` builds them here and ``up`` imports them.

``down`` does not rely on the kubelet or containerd ending cleanly: after stopping them it
finds what is left by where it lives (the node's state dir, its cgroup root, its bridge name).
Stdlib only, like ``localstack.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import localstack
import realnode_files as files
import realnode_services as services
import realnode_sweep as sweep
from localstack import Config, StackError

KUBELET, CONTAINERD = "realnode-kubelet", "realnode-containerd"
S3_RELAY, AMQP_RELAY = "realnode-s3-relay", "realnode-amqp-relay"
PARTS_IN_STOP_ORDER = [KUBELET, *services.PARTS_IN_STOP_ORDER, AMQP_RELAY, S3_RELAY, CONTAINERD]
NEEDED_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "umoci", "debootstrap",
                "buildah", "socat", "nft")  # fmt: skip


def enabled(env: dict[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get("MSTC_STACK_REAL_NODE") == "1"


def present(cfg: Config) -> bool:
    """Whether this stack has a real node (up made its state dir), whatever the switch says."""
    return files.Layout(cfg).root.exists()


def apiserver_args(cfg: Config) -> list[str]:
    """The API server reaches kubelets by InternalIP (the node's name resolves nowhere), and
    admits a namespace's default node selector and tolerations (NAMESPACE_ANNOTATIONS)."""
    del cfg
    if not enabled():
        return []
    return [
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
    ]


def _run(*argv: str, timeout: float = 120) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise StackError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def ctr(lay: files.Layout, *args: str) -> str:
    return _run("ctr", f"--address={lay.containerd_socket}", "--namespace=k8s.io", *args)


# --- up -------------------------------------------------------------------------------------


def _preflight(cfg: Config) -> Path:
    missing = [t for t in NEEDED_TOOLS if shutil.which(t) is None]
    missing += [
        p
        for p in ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback")
        if not Path(p).exists()
    ]
    if missing:
        raise StackError(f"real node: missing {', '.join(missing)}; run `make realnode-deps`")
    return localstack.binary(cfg, "kubernetes", "kubelet")


def _build_images() -> dict[str, Path]:
    """Each image's archive, built here or taken from the cache (see stack/images/build.sh)."""
    script = str(localstack.HERE / "images" / "build.sh")
    roles = ("pause", "base", "job", "worker", "rabbitmq", "minio", "tasks")
    return {role: Path(_run(script, role, timeout=1800).strip()) for role in roles}


def _ref(role: str, archive: Path) -> str:
    return f"mstc.local/{role}:{archive.stem.removeprefix(role + '-')}"


def _import_images(lay: files.Layout, archives: dict[str, Path]) -> None:
    """Into the node's containerd, under the names pods use; the list goes to images.json."""
    for role, archive in archives.items():
        ctr(lay, "images", "import", f"--base-name=mstc.local/{role}", str(archive))
    refs = {role: _ref(role, archive) for role, archive in archives.items()}
    lay.images_file.write_text(json.dumps(refs, indent=2))


def _network(lay: files.Layout) -> None:
    """The bridge with the node's address on it, made before the kubelet (which checks that
    its node IP is on this machine); the CNI bridge plugin then uses it as it is."""
    if not Path(f"/sys/class/net/{lay.bridge}").exists():
        _run("ip", "link", "add", lay.bridge, "type", "bridge")
    addrs = _run("ip", "-o", "-4", "addr", "show", "dev", lay.bridge)
    if f" {lay.node_ip}/" not in addrs:
        _run("ip", "addr", "add", f"{lay.node_ip}/24", "dev", lay.bridge)
    _run("ip", "link", "set", lay.bridge, "up")
    (lay.root / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (lay.root / "cni" / "net.d" / "10-mstc.conflist").write_text(files.cni_config(lay))


def _cgroups(lay: files.Layout) -> None:
    """The kubelet's cgroup root, in every hierarchy (it refuses to start without it)."""
    for path in lay.cgroup_dirs():
        path.mkdir(exist_ok=True)
        if path.parent.name == "cpuset":  # a v1 cpuset starts empty; give it the CPUs first
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (path / knob).write_text((path.parent / knob).read_text())


def _containerd(cfg: Config, lay: files.Layout, pause_ref: str) -> None:
    (lay.root / "containerd").mkdir(parents=True, exist_ok=True)
    conf = lay.root / "containerd" / "config.toml"
    conf.write_text(files.containerd_config(lay, pause_ref))
    localstack.start(cfg, CONTAINERD, ["containerd", f"--config={conf}", "--log-level=warn"])
    localstack.wait_for("containerd", lambda: bool(ctr(lay, "version")), 30, cfg, CONTAINERD)


def _relay(cfg: Config, lay: files.Layout, part: str, port: int) -> None:
    """A server listening on 127.0.0.1 only (MinIO, RabbitMQ), reached by pods at the node's
    address on the same port."""
    argv = [
        "socat",
        f"TCP-LISTEN:{port},bind={lay.node_ip},fork,reuseaddr",
        f"TCP:127.0.0.1:{port}",
    ]
    localstack.start(cfg, part, argv)
    localstack.wait_for(part, lambda: _listening(lay.node_ip, port), 15, cfg, part)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _kubelet(cfg: Config, lay: files.Layout, kubelet: Path) -> None:
    files.ensure_certs(lay)
    localstack.write_kubeconfig(cfg, lay.root / "kubelet.kubeconfig", "realnode-kubelet")
    (lay.root / "kubelet.json").write_text(files.kubelet_config(lay))
    # Without the Node authorizer, the node's identity gets the kubelet's role through RBAC.
    binding = localstack.kubectl(
        cfg,
        "create",
        "clusterrolebinding",
        "mstc-real-node",
        "--clusterrole=system:node",
        f"--user=system:node:{files.NODE_NAME}",
        "--dry-run=client",
        "-o",
        "json",
    )
    localstack.kubectl(cfg, "apply", "--server-side", "-f", "-", stdin=binding)
    localstack.start(cfg, KUBELET, files.kubelet_argv(lay, kubelet))

    def node_ready() -> bool:
        # Ready is not enough: the node lifecycle controller lifts its not-ready taint a few
        # seconds later, and until then the node carries a taint that is not the stack's own.
        node = json.loads(localstack.kubectl(cfg, "get", "node", files.NODE_NAME, "-o", "json"))
        conditions = node.get("status", {}).get("conditions", [])
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        taints = {t["key"] for t in node.get("spec", {}).get("taints", [])}
        return ready and taints == {files.TAINT_KEY}

    localstack.wait_for("real node", node_ready, 120, cfg, KUBELET)


def up(cfg: Config) -> None:
    """Bring the real node up beside KWOK's; the control plane must already be up."""
    started = time.monotonic()
    lay = files.Layout(cfg)
    kubelet = _preflight(cfg)
    lay.root.mkdir(parents=True, exist_ok=True)
    _network(lay)
    _cgroups(lay)
    archives = _build_images()
    _containerd(cfg, lay, _ref("pause", archives["pause"]))
    _import_images(lay, archives)
    _relay(cfg, lay, S3_RELAY, cfg.ports["s3"])
    _relay(cfg, lay, AMQP_RELAY, cfg.ports["amqp"])
    _kubelet(cfg, lay, kubelet)
    services.up(cfg, lay)
    print(f"real node {files.NODE_NAME} Ready in {time.monotonic() - started:.1f} s")


def connection_env(cfg: Config) -> dict[str, str]:
    """What tests and users need to run pods on the real node."""
    lay = files.Layout(cfg)
    env = {"MSTC_REAL_NODE": files.NODE_NAME, "MSTC_REAL_NODE_HOST_IP": lay.node_ip,
           # MinIO as pods on the node reach it (through the relay): give it to Jobs.
           "MSTC_REAL_NODE_MINIO_HOST": lay.node_ip,
           # RabbitMQ's AMQP port likewise: a worker's WORK_QUEUE_HOST for Jobs' task queues.
           "MSTC_REAL_NODE_AMQP_HOST": lay.node_ip}  # fmt: skip
    if lay.images_file.exists():
        for role, ref in json.loads(lay.images_file.read_text()).items():
            env[f"MSTC_REAL_NODE_{role.upper()}_IMAGE"] = ref
    return env


# --- down -----------------------------------------------------------------------------------


def _kill_tasks(lay: files.Layout) -> None:
    """Every container's processes, through containerd while it still runs: its shims then
    unmount the rootfs and exit. What this misses, _sweep finds."""
    with contextlib.suppress(StackError, subprocess.TimeoutExpired):
        for task in ctr(lay, "tasks", "ls", "-q").split():
            with contextlib.suppress(StackError):
                ctr(lay, "tasks", "kill", "--signal=SIGKILL", "--all", task)
            with contextlib.suppress(StackError):
                ctr(lay, "tasks", "delete", "--force", task)


def down(cfg: Config) -> None:
    """Stop the real node and remove every trace of it from the machine (not its state dir,
    which localstack's down removes with the rest)."""
    lay = files.Layout(cfg)
    localstack.stop(cfg, KUBELET)
    services.down(cfg)
    localstack.stop(cfg, AMQP_RELAY)
    localstack.stop(cfg, S3_RELAY)
    if localstack.is_running(cfg, CONTAINERD):
        _kill_tasks(lay)
    localstack.stop(cfg, CONTAINERD)
    sweep.kill_leftovers(lay)
    sweep.unmount(lay)
    sweep.remove_network(lay)
    sweep.remove_cgroups(lay)


def status(cfg: Config) -> dict[str, bool]:
    return {name: localstack.is_running(cfg, name) for name in reversed(PARTS_IN_STOP_ORDER)}
