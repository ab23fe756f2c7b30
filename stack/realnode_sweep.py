"""What the real node leaves on the machine, found by where it lives, and removed.

Owns the part of the real node's ``down`` that does not trust the kubelet or containerd to
have ended cleanly: processes (containerd's shims name the node's state dir; containers live
in its cgroup root; the MinIO relay binds the node's address), mounts under its state dir
(container root filesystems, /dev/shm, network namespaces, pod volumes), its bridge, libcni's
cache files of its network, and its cgroup root. Each is found by a name or path that only this
stack's real node uses, so another stack's node on the same machine is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import realnode_files as files
from localstack import StackError


def our_pids(lay: files.Layout) -> set[int]:
    """Processes of this node: those whose command line names its state dir (containerd's
    shims) or its relay's listening address, and those in its cgroup root (the containers')."""
    pids: set[int] = set()
    markers = (str(lay.root).encode(), f"bind={lay.node_ip}".encode())
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            text = cmdline.read_bytes()
            if any(marker in text for marker in markers):
                pids.add(int(cmdline.parent.name))
    for top in lay.cgroup_dirs():
        for procs in top.rglob("cgroup.procs") if top.exists() else []:
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    pids.discard(os.getpid())
    return pids


def kill_leftovers(lay: files.Layout) -> None:
    deadline = time.monotonic() + 15
    while (pids := our_pids(lay)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:  # our own children (none expected) would otherwise stay zombies
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if pids := our_pids(lay):
        raise StackError(f"real node: processes {sorted(pids)} would not end")


def our_mounts(lay: files.Layout) -> list[str]:
    """Mount points under the node's state dir (rootfs overlays, shm, netns, pod volumes)."""
    root = str(lay.root)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space, ...
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return points


def unmount(lay: files.Layout) -> None:
    for point in sorted(set(our_mounts(lay)), key=len, reverse=True):  # deepest first
        out = subprocess.run(["umount", point], capture_output=True, check=False)
        if out.returncode != 0:
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    if left := our_mounts(lay):
        raise StackError(f"real node: could not unmount {left}")


def remove_cgroups(lay: files.Layout) -> None:
    for top in lay.cgroup_dirs():
        if not top.exists():
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):  # children before parents
            with contextlib.suppress(OSError):
                Path(dirpath).rmdir()
        if top.exists():
            raise StackError(f"real node: cgroup {top} is still there (processes in it?)")


def remove_network(lay: files.Layout) -> None:
    if Path(f"/sys/class/net/{lay.bridge}").exists():
        argv = ["ip", "link", "delete", lay.bridge]
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise StackError(f"real node: ip link delete {lay.bridge}: {out.stderr.strip()}")
    # libcni's cache of results, which containerd 1.6 keeps in the machine's default place:
    # this network's, and the loopback's of the same sandboxes.
    results = Path("/var/lib/cni/results")
    for cached in results.glob(f"{lay.network}-*-eth0"):
        sandbox = cached.name.removeprefix(f"{lay.network}-").removesuffix("-eth0")
        (results / f"cni-loopback-{sandbox}-lo").unlink(missing_ok=True)
        cached.unlink(missing_ok=True)
    for empty in (results, results.parent):  # made by the first pod, if nothing else is there
        with contextlib.suppress(OSError):
            empty.rmdir()
    # containerd's shims and ctr keep these empty dirs (fixed paths) after their sockets go.
    run_dir = Path("/run/containerd")
    for path in (
        run_dir / "s",
        run_dir / "fifo",
        run_dir / "runc/k8s.io",
        run_dir / "runc",
        run_dir,
    ):
        with contextlib.suppress(OSError):
            path.rmdir()
