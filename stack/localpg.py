"""The local stack's PostgreSQL: Debian's server in its own cluster under the stack's state dir.

Owns making the cluster (initdb, once per state dir), starting and health-checking the
server on 127.0.0.1 at the stack's `postgres` port, and the flow service's database and
password-protected user. The superuser is reached only through a Unix socket inside the
state dir (trust, socket mode 0700); TCP asks for a password (scram-sha-256). Tuned to be
cheap, as it runs in every stack: no fsync, small buffers, few connections: a throwaway
test server, like etcd's --unsafe-no-fsync. PostgreSQL refuses to run as root, so when the
stack runs as root the cluster belongs to the `postgres` OS user Debian's package made.

Stdlib only, like ``localstack.py``, which imports this module when it is used.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import localstack
from localstack import Config, StackError

PART = "postgres"
PG_USER, PG_PASS, PG_DB = "mstc_flow", "mstc-local-secret", "mstc_flow"
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "60",
    "unix_socket_permissions": "0700",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def bin_dir() -> Path:
    """The newest PostgreSQL Debian installed (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise StackError("postgresql is not installed; run `make stack-deps` (apt-get)")
    return found[-1].parent


def _root(cfg: Config) -> Path:
    return cfg.state_dir / "postgres"


def _outside(cfg: Config) -> Path:
    """Where the cluster goes when the server's user cannot reach the state dir (a pytest
    tmp_path is 0700 root) or the socket's path would be too long for a Unix socket (107
    bytes): a directory of its own in /tmp, linked from the state dir."""
    return Path("/tmp") / f"mstc-postgres-{cfg.ports['postgres']}"


def _reachable(path: Path) -> bool:
    """Whether any user may walk down to `path` (every directory above it is o+x)."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


def _make_root(cfg: Config) -> None:
    root = _root(cfg)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    socket = root / "run" / f".s.PGSQL.{cfg.ports['postgres']}"
    if (os_user() is None or _reachable(root)) and len(str(socket)) < 100:
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        return
    shutil.rmtree(_outside(cfg), ignore_errors=True)
    _outside(cfg).mkdir(mode=0o755)
    root.unlink(missing_ok=True)
    root.symlink_to(_outside(cfg), target_is_directory=True)


def remove(cfg: Config) -> None:
    """Delete the cluster where it lives (after the server stopped)."""
    root = _root(cfg)
    if root.is_symlink():
        shutil.rmtree(root.resolve(), ignore_errors=True)
        root.unlink()


def _data(cfg: Config) -> Path:
    return _root(cfg).resolve() / "data"


def _socket_dir(cfg: Config) -> Path:
    return _root(cfg).resolve() / "run"


def os_user() -> str | None:
    """Who runs the server: `postgres` when the stack runs as root, else the stack's user."""
    return "postgres" if os.geteuid() == 0 else None


def url(cfg: Config) -> str:
    """The flow's store URL for SQLAlchemy with psycopg 3."""
    return f"postgresql+psycopg://{PG_USER}:{PG_PASS}@127.0.0.1:{cfg.ports['postgres']}/{PG_DB}"


def _as_server_user(path: Path) -> None:
    user = os_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        for item in [path, *path.rglob("*")]:
            os.chown(item, entry.pw_uid, entry.pw_gid)


def _run(cfg: Config, argv: list[str], stdin: str | None = None) -> str:
    out = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        user=os_user(),
        cwd=_root(cfg).resolve(),
    )
    if out.returncode != 0:
        raise StackError(f"{Path(argv[0]).name} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def _init_cluster(cfg: Config) -> None:
    if (_data(cfg) / "PG_VERSION").exists():
        return
    _make_root(cfg)
    data, root = _data(cfg), _root(cfg)
    shutil.rmtree(data, ignore_errors=True)  # a half-made cluster of a crashed `up`
    _socket_dir(cfg).mkdir(parents=True, exist_ok=True)
    _as_server_user(root.resolve())
    initdb = [str(bin_dir() / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8"]
    _run(cfg, [*initdb, "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
               "--no-instructions", "--locale=C"])  # fmt: skip
    settings = {
        **SERVER_SETTINGS,
        "port": str(cfg.ports["postgres"]),
        "unix_socket_directories": f"'{_socket_dir(cfg)}'",
    }
    conf = "".join(f"{name} = {value}\n" for name, value in settings.items())
    with (data / "postgresql.conf").open("a") as file:
        file.write("\n# mstc local stack\n" + conf)


def _psql(cfg: Config, sql: str, database: str = "postgres") -> str:
    argv = [str(bin_dir() / "psql"), "-h", str(_socket_dir(cfg)), "-p", str(cfg.ports["postgres"]),
            "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt"]  # fmt: skip
    return _run(cfg, argv, stdin=sql)


def ready(cfg: Config) -> bool:
    port = str(cfg.ports["postgres"])
    argv = [str(bin_dir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port]
    return subprocess.run(argv, check=False, timeout=10).returncode == 0


def _ensure_database(cfg: Config) -> None:
    """The flow's user and database; idempotent, so `up` on an existing state dir is a no-op."""
    _psql(
        cfg,
        f"""
        SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', '{PG_USER}', '{PG_PASS}')
          WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PG_USER}') \\gexec
        SELECT format('CREATE DATABASE %I OWNER %I', '{PG_DB}', '{PG_USER}')
          WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{PG_DB}') \\gexec
        """,
    )


def up(cfg: Config) -> None:
    _init_cluster(cfg)
    argv = [str(bin_dir() / "postgres"), "-D", str(_data(cfg))]
    localstack.start(cfg, PART, argv, user=os_user())
    localstack.wait_for("PostgreSQL", lambda: ready(cfg), 60, cfg, PART)
    _ensure_database(cfg)


def connection_env(cfg: Config) -> dict[str, str]:
    return {"MSTC_FLOW_TEST_PG_URL": url(cfg)}
