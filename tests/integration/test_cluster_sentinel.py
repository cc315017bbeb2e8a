"""The registry behind Redis Sentinel: the primary is killed, and claims go on through the
replica that the sentinels promote (cluster.redisURL = redis+sentinel://...).

Real processes: Debian's redis-server as a primary, a replica, and three sentinels
(`redis-server CONF --sentinel`), on loopback ports, with a short down-after-milliseconds so
that the failover takes a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import redis.asyncio as aioredis

from tests.support.peers import _tool, reserve_port
from tests.support.procs import LoggedProcess
from tunnel_server.cluster.claims import Owner
from tunnel_server.cluster.registry import ClusterRegistry, ClusterUnavailable

TEST_TIMEOUT_S: Final = 90.0
READY_S: Final = 30.0
SERVICE: Final = "tunnelkit"
SENTINELS: Final = 3
QUORUM: Final = 2
DOWN_AFTER_MS: Final = 500
FAILOVER_TIMEOUT_MS: Final = 3000
RETRY_S: Final = 0.2  # between claims while the failover runs


class Processes:
    """Every process the test starts; stopped in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[LoggedProcess] = []

    async def start(self, name: str, argv: list[str]) -> LoggedProcess:
        proc = await LoggedProcess.start(argv, name=name, log_path=self.log_dir / f"{name}.log")
        self.procs.append(proc)
        return proc

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.returncode is None:
                await proc.terminate(10.0, expect_exit_code=None)
            proc.close()


@contextlib.asynccontextmanager
async def processes(log_dir: Path) -> AsyncIterator[Processes]:
    group = Processes(log_dir)
    try:
        yield group
    finally:
        await group.stop()


def redis_argv(port: int, directory: Path, *extra: str) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _tool("redis-server"),
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(directory), "--logfile", "", *extra,
    ]  # fmt: skip


def sentinel_conf(path: Path, port: int, primary: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'port {port}\nbind 127.0.0.1\ndir {path.parent}\nlogfile ""\n'
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary} {QUORUM}\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    return path


async def claim_until_granted(registry: ClusterRegistry, name: str, owner: Owner) -> None:
    """Claim `name`, trying again while the registry says Redis is away (the failover)."""
    while True:
        try:
            assert await registry.claim("domain", [name], owner) is None
            return
        except ClusterUnavailable:
            await asyncio.sleep(RETRY_S)


async def test_cluster_sentinel_failover_keeps_claims_going(tmp_path: Path) -> None:
    """Primary killed with kill -9: the sentinels promote the replica, the registry's next
    claims reach it, and the name claimed before the failover is still held there."""
    ports = [reserve_port(socket.SOCK_STREAM) for _ in range(2 + SENTINELS)]
    primary_port, replica_port, *sentinel_ports = ports
    async with asyncio.timeout(TEST_TIMEOUT_S), processes(tmp_path / "logs") as group:
        primary = await group.start("primary", redis_argv(primary_port, tmp_path / "primary"))
        await primary.wait_for(re.compile(r"[Rr]eady to accept connections"), READY_S)
        replica = await group.start(
            "replica",
            redis_argv(
                replica_port, tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary_port)
            ),
        )
        await replica.wait_for(re.compile(r"sync: Finished with success"), READY_S)
        sentinels = []
        for index, port in enumerate(sentinel_ports):
            conf = sentinel_conf(tmp_path / f"sentinel-{index}" / "s.conf", port, primary_port)
            sentinels.append(
                await group.start(
                    f"sentinel-{index}", [_tool("redis-server"), str(conf), "--sentinel"]
                )
            )
        for sentinel in sentinels:  # each knows the replica and the other sentinels
            await sentinel.wait_for(re.compile(rf"\+slave slave 127\.0\.0\.1:{replica_port}"))
            await sentinel.wait_for(re.compile(r"\+sentinel sentinel"), READY_S)
        hosts = ",".join(f"127.0.0.1:{port}" for port in sentinel_ports)
        registry = ClusterRegistry.from_url(
            f"redis+sentinel://{hosts}/{SERVICE}", "node-a", "127.0.0.1:7000", lease_s=30
        )
        owner = Owner("node-a", "alice", "c1")
        await registry.start()
        try:
            await registry.wait_synced()
            await claim_until_granted(registry, "before.test/", owner)
            admin = aioredis.from_url(f"redis://127.0.0.1:{primary_port}")
            try:
                assert await admin.execute_command("WAIT", "1", "5000") == 1  # replicated
            finally:
                await admin.aclose()
            primary.kill()
            await claim_until_granted(registry, "after.test/", owner)
            await sentinels[0].wait_for(re.compile(r"\+switch-master"), READY_S)
            promoted = aioredis.from_url(f"redis://127.0.0.1:{replica_port}")
            try:
                role = await promoted.execute_command("ROLE")
                assert role[0] in (b"master", "master"), role
                keys = {key.decode() for key in await promoted.keys("tunnelkit:claim:*")}
            finally:
                await promoted.aclose()
            assert keys == {
                "tunnelkit:claim:domain:before.test/",
                "tunnelkit:claim:domain:after.test/",
            }
            assert registry.owner_of("domain", "after.test/") == owner
        finally:
            await registry.close()
