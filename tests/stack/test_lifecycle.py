"""The stack's own promises: ports are configurable, and `down` leaves nothing running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import localstack
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack


def test_every_port_moves_with_the_offset_or_its_own_variable() -> None:
    cfg = localstack.Config.from_env(
        {"MSTC_STACK_PORT_OFFSET": "100", "MSTC_STACK_AMQP_PORT": "7001"}
    )
    assert cfg.ports["amqp"] == 7001
    others = {k: v for k, v in cfg.ports.items() if k != "amqp"}
    assert others == {k: v + 100 for k, v in localstack.DEFAULT_PORTS.items() if k != "amqp"}


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_second_stack_runs_beside_the_first_and_down_leaves_nothing(
    stack: StackInfo, tmp_path: Path
) -> None:
    if stack.kind != "local":
        pytest.skip("concerns the local stack's own processes")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSTC_STACK_")}
    env |= {"MSTC_STACK_DIR": str(tmp_path / "second"), "MSTC_STACK_PORT_OFFSET": "100"}
    cfg = localstack.Config.from_env(env)
    groups: list[int] = []
    try:
        localstack.up(cfg)
        assert localstack.all_running(cfg)
        groups = [int(p.read_text()) for p in (cfg.state_dir / "pids").glob("*.pid")]
        assert len(groups) == len(localstack.PARTS_IN_STOP_ORDER)
        assert all(
            localstack.port_open(port)
            for name, port in cfg.ports.items()
            if name in {"amqp", "s3", "apiserver", "etcd"}
        )
    finally:
        localstack.down(cfg)
    assert {pgid: _group_members(pgid) for pgid in groups} == {pgid: [] for pgid in groups}
    assert not any(localstack.port_open(port) for port in cfg.ports.values())
    assert not cfg.state_dir.exists()
    # ... and the first stack was not disturbed.
    assert localstack.all_running(localstack.Config.from_env())
