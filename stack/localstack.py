"""The local stack: real RabbitMQ, MinIO, PostgreSQL, etcd, Kubernetes control plane, KWOK, helm.

Owns starting, checking and stopping every server the worker and the flow service talk to,
on 127.0.0.1, without Docker. Binaries come from ``stack/build.sh`` (cached by version);
RabbitMQ and PostgreSQL (``localpg.py``) from Debian. State lives in one directory
(``MSTC_STACK_DIR``, default ``/tmp/mstc-stack``) so that ``down`` can find and stop exactly
what ``up`` started, and so that ``env.sh`` there tells any shell, the worker, the client or
kubectl where the stack is.

Stdlib only: it must run before the project's virtualenv exists. Usage::

    python3 stack/localstack.py up|down|status|env
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
NODE_NAME = "kwok-node-0"

# Credentials of the local stack. Deliberately not the guest/minioadmin defaults, which the
# worker refuses unless told it is in development.
AMQP_USER, AMQP_PASS = "mstc", "mstc-local-secret"
S3_USER, S3_PASS = "mstc-local", "mstc-local-secret"

DEFAULT_PORTS = {
    "amqp": 5672,
    "amqps": 5671,
    "rabbit_mgmt": 15672,
    "mqtt": 1883,
    "rabbit_dist": 25672,
    "epmd": 4369,
    "s3": 9000,
    "s3_console": 9001,
    "etcd": 2379,
    "etcd_peer": 2380,
    "apiserver": 6443,
    "controller_manager": 10257,
    "scheduler": 10259,
    "kwok": 10250,
    "postgres": 5432,
}


class StackError(RuntimeError):
    """The stack could not be brought up or checked; the message says which part and why."""


@dataclass(frozen=True)
class Config:
    """Where the stack lives and which ports it uses.

    Every port can be moved with ``MSTC_STACK_<NAME>_PORT`` (for example
    ``MSTC_STACK_AMQP_PORT``), or all at once with ``MSTC_STACK_PORT_OFFSET``, so two stacks
    can run side by side.
    """

    state_dir: Path
    cache_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if env is None else env)
        offset = int(env.get("MSTC_STACK_PORT_OFFSET", "0"))
        ports = {
            name: int(env.get(f"MSTC_STACK_{name.upper()}_PORT", default + offset))
            for name, default in DEFAULT_PORTS.items()
        }
        return cls(
            state_dir=Path(env.get("MSTC_STACK_DIR", "/tmp/mstc-stack")),
            cache_dir=Path(env.get("MSTC_CACHE_DIR", Path.home() / ".cache" / "mstc-stack")),
            ports=ports,
        )

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env.sh"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    def url(self, port_name: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[port_name]}"


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in (HERE / "versions.env").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def binary(cfg: Config, part: str, name: str) -> Path:
    version = versions()[f"{part.upper()}_VERSION"]
    path = cfg.cache_dir / f"{part}-{version}" / name
    if not path.exists():
        raise StackError(f"{name} {version} is not built; run `make stack-build` (stack/build.sh)")
    return path


# --- processes ------------------------------------------------------------------------------


def _pid_file(cfg: Config, name: str) -> Path:
    return cfg.state_dir / "pids" / f"{name}.pid"


def _log_file(cfg: Config, name: str) -> Path:
    return cfg.state_dir / "logs" / f"{name}.log"


def start(
    cfg: Config,
    name: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> None:
    """Start one server in its own session, logging to the state dir, unless it runs already.

    `user`: the OS user to run it as (PostgreSQL will not run as root); None = this one.
    """
    if is_running(cfg, name):
        return
    _log_file(cfg, name).parent.mkdir(parents=True, exist_ok=True)
    _pid_file(cfg, name).parent.mkdir(parents=True, exist_ok=True)
    with _log_file(cfg, name).open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group, so `down` can stop all it spawns
            user=user,
        )
    _pid_file(cfg, name).write_text(str(proc.pid))


def is_running(cfg: Config, name: str) -> bool:
    try:
        pid = int(_pid_file(cfg, name).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    # A zombie (exited child of this very process) is not running.
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def stop(cfg: Config, name: str, grace: float = 15.0) -> None:
    """Stop one server and its whole process group: TERM, then KILL after `grace` seconds."""
    pid_file = _pid_file(cfg, name)
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    pid_file.unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Only zombies left means the group is done.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().split(")")[-1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def wait_for(what: str, check: Callable[[], bool], timeout: float, cfg: Config, log: str) -> None:
    """Poll `check` until it holds; on timeout, fail with the tail of the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        if log and not is_running(cfg, log):
            break
        time.sleep(0.2)
    tail = ""
    if log and _log_file(cfg, log).exists():
        tail = "\n".join(_log_file(cfg, log).read_text(errors="replace").splitlines()[-25:])
    state = "exited" if log and not is_running(cfg, log) else f"not ready after {timeout:.0f} s"
    raise StackError(f"{what} {state}; last lines of {_log_file(cfg, log)}:\n{tail}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(
    url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
) -> bool:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --- RabbitMQ -------------------------------------------------------------------------------


def rabbit_env(cfg: Config) -> dict[str, str]:
    base = cfg.state_dir / "rabbitmq"
    p = cfg.ports
    return {
        "HOME": str(base / "home"),  # the Erlang cookie lives here
        "RABBITMQ_NODENAME": f"mstc-{p['amqp']}@localhost",
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_DIST_PORT": str(p["rabbit_dist"]),
        "ERL_EPMD_PORT": str(p["epmd"]),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }


def rabbitmqctl(cfg: Config, *args: str, timeout: float = 60) -> str:
    out = subprocess.run(
        [str(RABBIT_BIN / "rabbitmqctl"), *args],
        env={**os.environ, **rabbit_env(cfg)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise StackError(f"rabbitmqctl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def rabbit_eval(cfg: Config, expression: str) -> str:
    """Evaluate an Erlang expression in the running broker (tests tune its timeouts)."""
    return rabbitmqctl(cfg, "eval", expression).strip()


def up_rabbitmq(cfg: Config) -> None:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        raise StackError("rabbitmq-server is not installed; run `make stack-deps` (apt-get)")
    base = cfg.state_dir / "rabbitmq"
    (base / "home").mkdir(parents=True, exist_ok=True)
    ensure_service_cert(cfg)  # after ensure_pki (see up)
    p = cfg.ports
    (base / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_mqtt].\n")
    (base / "rabbitmq.conf").write_text(
        "\n".join(
            [
                f"listeners.tcp.1 = 127.0.0.1:{p['amqp']}",
                # TLS beside plain AMQP, for the tests of the worker's TLS settings.
                f"listeners.ssl.1 = 127.0.0.1:{p['amqps']}",
                f"ssl_options.cacertfile = {cfg.pki / 'ca.crt'}",
                f"ssl_options.certfile = {cfg.pki / 'services.crt'}",
                f"ssl_options.keyfile = {cfg.pki / 'services.key'}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
                "management.tcp.ip = 127.0.0.1",
                f"management.tcp.port = {p['rabbit_mgmt']}",
                f"mqtt.listeners.tcp.1 = 127.0.0.1:{p['mqtt']}",
                # MQTT clients log in like AMQP ones (else anonymous = the default user).
                "mqtt.allow_anonymous = false",
                f"default_user = {AMQP_USER}",
                f"default_pass = {AMQP_PASS}",
                "default_user_tags.administrator = true",
                "loopback_users = none",
                "log.console.level = warning",
                "",
            ]
        )
    )
    env = rabbit_env(cfg)
    # Our own epmd on our own port, in the foreground, so `down` stops it like any other part.
    start(cfg, "epmd", ["epmd", "-port", str(p["epmd"]), "-address", "127.0.0.1"], env)
    wait_for("epmd", lambda: port_open(p["epmd"]), 15, cfg, "epmd")
    start(cfg, "rabbitmq", [str(RABBIT_BIN / "rabbitmq-server")], env)
    auth = base64.b64encode(f"{AMQP_USER}:{AMQP_PASS}".encode()).decode()
    wait_for(
        "RabbitMQ",
        lambda: (
            port_open(p["amqp"])
            and port_open(p["amqps"])
            and port_open(p["mqtt"])
            and http_ok(
                f"{cfg.url('rabbit_mgmt')}/api/aliveness-test/%2F",
                headers={"Authorization": f"Basic {auth}"},
            )
        ),
        120,
        cfg,
        "rabbitmq",
    )


# --- MinIO ----------------------------------------------------------------------------------


def up_minio(cfg: Config) -> None:
    data = cfg.state_dir / "minio" / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary(cfg, "minio", "minio")),
        "server",
        "--quiet",
        "--address",
        f"127.0.0.1:{cfg.ports['s3']}",
        "--console-address",
        f"127.0.0.1:{cfg.ports['s3_console']}",
        str(data),
    ]
    env = {"MINIO_ROOT_USER": S3_USER, "MINIO_ROOT_PASSWORD": S3_PASS, "HOME": str(data.parent)}
    start(cfg, "minio", argv, env)
    wait_for("MinIO", lambda: http_ok(f"{cfg.url('s3')}/minio/health/ready"), 60, cfg, "minio")


# --- Kubernetes -----------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise StackError(f"openssl {' '.join(args)} failed: {out.stderr.strip()}")


def ensure_pki(cfg: Config) -> None:
    """A CA, the API server's serving cert, client certs per component, and the SA key pair."""
    pki = cfg.pki
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "done").exists():
        return
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=mstc-local-ca",
        cwd=pki,
    )
    openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    sans = (
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    )
    certs = {
        "apiserver": ("/CN=kube-apiserver", sans),
        "kwok": ("/CN=kwok", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        "admin": ("/O=system:masters/CN=mstc-admin", None),
        "controller-manager": ("/CN=system:kube-controller-manager", None),
        "scheduler": ("/CN=system:kube-scheduler", None),
        "kubelet-client": ("/O=system:masters/CN=kube-apiserver-kubelet-client", None),
    }
    for name, (subject, ext) in certs.items():
        openssl(
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
        extra = ["-extfile", "/dev/stdin"] if ext else []
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
            f"{name}.crt",
            *extra,
        ]
        subprocess.run(cmd, cwd=pki, input=ext or "", text=True, check=True, capture_output=True)
    (pki / "done").write_text("")


def ensure_service_cert(cfg: Config) -> None:
    """A serving certificate for 127.0.0.1 and localhost signed by the stack's CA.

    RabbitMQ's TLS listener uses it, and tests give it to the TLS servers they start, so the
    worker's TLS settings are tested against a real private CA. Made apart from ensure_pki so
    a stack whose PKI predates it gets it too.
    """
    pki = cfg.pki
    if (pki / "services.crt").exists():
        return
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "services.key", "-out",
            "services.csr", "-subj", "/CN=mstc-local-services", cwd=pki)  # fmt: skip
    cmd = ["openssl", "x509", "-req", "-in", "services.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
           "-CAcreateserial", "-days", "3650", "-out", "services.crt.tmp",
           "-extfile", "/dev/stdin"]  # fmt: skip
    ext = "subjectAltName=IP:127.0.0.1,DNS:localhost"
    subprocess.run(cmd, cwd=pki, input=ext, text=True, check=True, capture_output=True)
    (pki / "services.crt.tmp").rename(pki / "services.crt")  # whole or absent, never half


def write_kubeconfig(cfg: Config, path: Path, user: str) -> None:
    pki = cfg.pki

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mstc-local",
                "cluster": {
                    "server": cfg.url("apiserver", "https"),
                    "certificate-authority-data": b64(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{user}.crt"),
                    "client-key-data": b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "mstc-local", "context": {"cluster": "mstc-local", "user": user}}],
        "current-context": "mstc-local",
    }
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML; no PyYAML needed here
    path.chmod(0o600)


def api_ready(cfg: Config) -> bool:
    ctx = ssl.create_default_context(cafile=str(cfg.pki / "ca.crt"))
    ctx.load_cert_chain(str(cfg.pki / "admin.crt"), str(cfg.pki / "admin.key"))
    return http_ok(f"{cfg.url('apiserver', 'https')}/readyz", context=ctx)


def kubectl(cfg: Config, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        [str(binary(cfg, "kubernetes", "kubectl")), f"--kubeconfig={cfg.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if out.returncode != 0:
        raise StackError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def up_etcd(cfg: Config) -> None:
    p = cfg.ports
    argv = [
        str(binary(cfg, "etcd", "etcd")),
        "--data-dir",
        str(cfg.state_dir / "etcd"),
        "--listen-client-urls",
        cfg.url("etcd"),
        "--advertise-client-urls",
        cfg.url("etcd"),
        "--listen-peer-urls",
        cfg.url("etcd_peer"),
        "--initial-advertise-peer-urls",
        cfg.url("etcd_peer"),
        "--initial-cluster",
        f"default={cfg.url('etcd_peer')}",
        "--unsafe-no-fsync",  # a throwaway test store: durability is not the point, speed is
        "--log-level",
        "warn",
    ]
    start(cfg, "etcd", argv)
    wait_for("etcd", lambda: http_ok(f"{cfg.url('etcd')}/health"), 30, cfg, "etcd")
    del p


def up_apiserver(cfg: Config) -> None:
    pki, p = cfg.pki, cfg.ports
    argv = [
        str(binary(cfg, "kubernetes", "kube-apiserver")),
        f"--etcd-servers={cfg.url('etcd')}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={p['apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'kubelet-client.key'}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-cluster-ip-range=10.96.0.0/16",
        # A loopback address cannot be an Endpoints address; nothing in-cluster needs it.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        # /debug/pprof only when asked (the benchmark's profiling runs): it costs nothing idle,
        # but a test stack has no use for it.
        f"--profiling={'true' if os.environ.get('MSTC_STACK_PROFILING') else 'false'}",
        "--v=0",
        *real_node().apiserver_args(cfg),
    ]
    start(cfg, "kube-apiserver", argv)
    wait_for("kube-apiserver", lambda: api_ready(cfg), 120, cfg, "kube-apiserver")


def up_controllers(cfg: Config) -> None:
    pki, p, state = cfg.pki, cfg.ports, cfg.state_dir
    write_kubeconfig(cfg, state / "controller-manager.kubeconfig", "controller-manager")
    write_kubeconfig(cfg, state / "scheduler.kubeconfig", "scheduler")
    kcm = [
        str(binary(cfg, "kubernetes", "kube-controller-manager")),
        f"--kubeconfig={state / 'controller-manager.kubeconfig'}",
        f"--authentication-kubeconfig={state / 'controller-manager.kubeconfig'}",
        f"--authorization-kubeconfig={state / 'controller-manager.kubeconfig'}",
        "--bind-address=127.0.0.1",
        f"--secure-port={p['controller_manager']}",
        f"--cert-dir={state / 'controller-manager-certs'}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        # Jobs are this project's whole business; let the Job controller keep up with bursts.
        "--concurrent-job-syncs=20",
        "--concurrent-ttl-after-finished-syncs=10",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--v=0",
    ]
    scheduler = [
        str(binary(cfg, "kubernetes", "kube-scheduler")),
        f"--kubeconfig={state / 'scheduler.kubeconfig'}",
        f"--authentication-kubeconfig={state / 'scheduler.kubeconfig'}",
        f"--authorization-kubeconfig={state / 'scheduler.kubeconfig'}",
        "--bind-address=127.0.0.1",
        f"--secure-port={p['scheduler']}",
        "--leader-elect=false",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]
    start(cfg, "kube-controller-manager", kcm)
    start(cfg, "kube-scheduler", scheduler)
    insecure = ssl._create_unverified_context()  # self-signed serving certs of kcm/scheduler
    for name, port in (
        ("kube-controller-manager", "controller_manager"),
        ("kube-scheduler", "scheduler"),
    ):
        healthz = functools.partial(http_ok, f"{cfg.url(port, 'https')}/healthz", insecure)
        wait_for(name, healthz, 60, cfg, name)

    def default_sa() -> bool:
        # Pods are refused until their namespace has its default ServiceAccount.
        kubectl(cfg, "get", "serviceaccount", "default", "-n", "default")
        return True

    wait_for("service-account controller", default_sa, 60, cfg, "kube-controller-manager")


def up_kwok(cfg: Config) -> None:
    p, state = cfg.ports, cfg.state_dir
    logs = state / "kwok" / "container.log"
    logs.parent.mkdir(parents=True, exist_ok=True)
    # KWOK serves it as every container's log, so it is in the CRI log format kubelets read.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
    lines = ["mstc local stack: KWOK pods have no real containers; this is their log.", "SUCCESS"]
    logs.write_text("".join(f"{stamp} stdout F {line}\n" for line in lines))
    kwok_config = (
        (HERE / "kwok" / "stages.yaml").read_text()
        + "\n---\n"
        + json.dumps(
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterLogs",
                "metadata": {"name": "all-pods"},
                "spec": {"logs": [{"containers": [], "logsFile": str(logs)}]},
            }
        )
    )
    (state / "kwok" / "kwok.yaml").write_text(kwok_config)
    argv = [
        str(binary(cfg, "kwok", "kwok")),
        f"--kubeconfig={cfg.kubeconfig}",
        f"--config={state / 'kwok' / 'kwok.yaml'}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-ip=127.0.0.1",
        f"--node-port={p['kwok']}",
        f"--server-address=127.0.0.1:{p['kwok']}",
        f"--tls-cert-file={cfg.pki / 'kwok.crt'}",
        f"--tls-private-key-file={cfg.pki / 'kwok.key'}",
        "--node-lease-duration-seconds=40",
    ]
    start(cfg, "kwok", argv)
    node = (HERE / "kwok" / "node.yaml").read_text().replace("NODE_NAME", NODE_NAME)
    kubectl(cfg, "apply", "--server-side", "-f", "-", stdin=node)

    def node_ready() -> bool:
        out = kubectl(
            cfg,
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        )
        return out.strip() == "True"

    wait_for("KWOK node", node_ready, 60, cfg, "kwok")


def up_kubernetes(cfg: Config) -> None:
    ensure_pki(cfg)
    write_kubeconfig(cfg, cfg.kubeconfig, "admin")
    up_etcd(cfg)
    up_apiserver(cfg)
    up_controllers(cfg)
    up_kwok(cfg)


# --- the whole stack ------------------------------------------------------------------------


def postgres() -> ModuleType:
    """The stack's PostgreSQL (stack/localpg.py), imported as `real_node` is, for the same
    reason (it imports this module)."""
    sys.modules.setdefault("localstack", sys.modules[__name__])
    import localpg  # noqa: PLC0415

    return localpg


def real_node() -> ModuleType:
    """The optional real node (stack/realnode.py), imported when used because it imports this
    module; run as a script, this module is registered under its own name first."""
    sys.modules.setdefault("localstack", sys.modules[__name__])
    import realnode  # noqa: PLC0415

    return realnode


PARTS_IN_STOP_ORDER = [
    "kwok",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
    "minio",
    "postgres",
    "rabbitmq",
    "epmd",
]


def connection_env(cfg: Config) -> dict[str, str]:
    """What the worker, the client, kubectl and helm read, in their own variable names."""
    p = cfg.ports
    helm_home = cfg.state_dir / "helm"
    return {
        # The Java worker's names, which this worker reads too.
        "WORK_QUEUE_HOST": "127.0.0.1",
        "WORK_QUEUE_PORT": str(p["amqp"]),
        "WORK_QUEUE_USER": AMQP_USER,
        "WORK_QUEUE_PASS": AMQP_PASS,
        "MINIO_SERVICE_HOST": "127.0.0.1",
        "MINIO_SERVICE_PORT": str(p["s3"]),
        "MINIO_ROOT_USER": S3_USER,
        "MINIO_ROOT_PASSWORD": S3_PASS,
        # The same, as single URLs.
        "MSTC_AMQP_URL": f"amqp://{AMQP_USER}:{AMQP_PASS}@127.0.0.1:{p['amqp']}/%2F",
        "MSTC_S3_ENDPOINT": cfg.url("s3"),
        # KWOK's simulated pods obey mstc.test/ annotations (stack/kwok/stages.yaml); a
        # worker refuses request annotations unless their prefix is allowed.
        "MSTC_REQUEST_ANNOTATION_PREFIXES": "mstc.test/",
        "MSTC_RABBITMQ_MANAGEMENT_URL": cfg.url("rabbit_mgmt"),
        "MSTC_MQTT_PORT": str(p["mqtt"]),
        "KUBECONFIG": str(cfg.kubeconfig),
        "HELM_BIN": str(binary(cfg, "helm", "helm")),
        "KUBECTL_BIN": str(binary(cfg, "kubernetes", "kubectl")),
        "HELM_CACHE_HOME": str(helm_home / "cache"),
        "HELM_CONFIG_HOME": str(helm_home / "config"),
        "HELM_DATA_HOME": str(helm_home / "data"),
        "MSTC_STACK_DIR": str(cfg.state_dir),
        # For TLS tests: RabbitMQ's TLS listener and the CA that signed its certificate.
        "MSTC_STACK_AMQPS_URL": f"amqps://{AMQP_USER}:{AMQP_PASS}@127.0.0.1:{p['amqps']}/%2F",
        "MSTC_STACK_CA_FILE": str(cfg.pki / "ca.crt"),
        # The flow service's store tests on PostgreSQL: a database of its own, password login.
        **postgres().connection_env(cfg),
        **(real_node().connection_env(cfg) if real_node().present(cfg) else {}),
    }


def write_env_file(cfg: Config) -> None:
    lines = ["# Connection settings of the local mstc stack; `source` this file."]
    lines += [f"export {k}='{v}'" for k, v in connection_env(cfg).items()]
    # The stack's own kubectl and helm, at the pinned versions, come first on PATH.
    bins = [binary(cfg, "kubernetes", "kubectl").parent, binary(cfg, "helm", "helm").parent]
    lines.append(f"export PATH='{':'.join(map(str, bins))}':\"$PATH\"")
    cfg.env_file.write_text("\n".join(lines) + "\n")


def up(cfg: Config) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Before the parts start side by side: RabbitMQ and Kubernetes both use the stack's CA.
    ensure_pki(cfg)
    ensure_service_cert(cfg)
    # Four independent parts; start them side by side.
    parts = (up_rabbitmq, up_minio, up_kubernetes, postgres().up)
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        futures = [pool.submit(f, cfg) for f in parts]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise StackError("\n".join(str(e) for e in errors))
    if real_node().enabled():
        real_node().up(cfg)
    write_env_file(cfg)
    print(f"stack up in {time.monotonic() - started:.1f} s; settings: source {cfg.env_file}")


def down(cfg: Config, keep_state: bool = False) -> None:
    failure = None
    if real_node().enabled() or real_node().present(cfg):
        try:
            real_node().down(cfg)
        except StackError as exc:  # stop the rest, but keep the state: mounts may be left in it
            failure = exc
    for name in PARTS_IN_STOP_ORDER:
        stop(cfg, name)
    if not keep_state:
        postgres().remove(cfg)
    if failure:
        raise failure
    if not keep_state and cfg.state_dir.exists():
        shutil.rmtree(cfg.state_dir, ignore_errors=True)


def status(cfg: Config) -> dict[str, bool]:
    parts = {name: is_running(cfg, name) for name in reversed(PARTS_IN_STOP_ORDER)}
    return {**parts, **(real_node().status(cfg) if real_node().present(cfg) else {})}


def all_running(cfg: Config, names: Iterable[str] = PARTS_IN_STOP_ORDER) -> bool:
    return all(is_running(cfg, n) for n in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--keep-state", action="store_true", help="down: keep data and logs")
    args = parser.parse_args(argv)
    cfg = Config.from_env()
    try:
        if args.command == "up":
            up(cfg)
        elif args.command == "down":
            down(cfg, keep_state=args.keep_state)
        elif args.command == "status":
            for name, running in status(cfg).items():
                print(f"{name:<24} {'running' if running else 'stopped'}")
            return 0 if all_running(cfg) else 1
        else:
            print(cfg.env_file)
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
