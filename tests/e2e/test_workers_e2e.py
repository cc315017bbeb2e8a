"""Workers on one machine (cluster.reusePort): two real tunneld share the control and vhost
ports through SO_REUSEPORT, with a real redis-server and two real tunnelc.

The kernel spreads connections across the workers. Each worker owns the sessions it accepted,
and a vhost request that lands on the other worker is relayed to the owner.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.test_cluster_e2e import Cluster
from tests.e2e.test_cluster_relay_e2e import SECRET, fetch_from
from tests.e2e.test_http_e2e import Reply, echo_apps, http_proxy, toml_lines
from tests.e2e.test_tcp_e2e import tcp_proxy
from tests.support.procs import TunnelProcess
from tests.support.redisserver import redis_server

DOMAINS: Final = {"alpha.workers.test": "alice", "beta.workers.test": "bob"}
REQUESTS: Final = 20  # per domain, each on a connection of its own
POLL_S: Final = 0.1  # between tries while a worker's cache catches up with the routes channel
LINK_UP: Final = re.compile(r"link to node (worker-[ab]) is up")


async def served(port: int, host: str) -> Reply:
    """A reply that is not a 404: a worker learns the other's routes a moment after the claim."""
    while True:
        reply = await fetch_from(port, host)
        if reply.status != 404:
            return reply
        await asyncio.sleep(POLL_S)


async def test_workers_share_ports_and_serve_every_domain(
    run_tunneld: Any, run_tunnelc: Any, tmp_path: Path
) -> None:
    """Two workers bind the same control and vhost ports; requests to the one vhost port are
    all answered by the right app, whichever worker they land on (local or relayed); a fixed
    TCP port stays its owner's alone."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        reuse = {"cluster.secret": SECRET, "cluster.reusePort": True}
        async with echo_apps(*DOMAINS.values()) as apps:
            first = await cluster.node(run_tunneld, "worker-a", reuse)
            shared = {"bindPort": first.control_port, "vhostHTTPPort": first.vhost_port}
            second = await cluster.node(run_tunneld, "worker-b", reuse | shared)
            assert (second.control_port, second.vhost_port) == (
                first.control_port,
                first.vhost_port,
            )
            fixed = unused_port()
            for (domain, user), app in zip(DOMAINS.items(), apps, strict=True):
                extra = tcp_proxy("db", app.port, fixed) if user == "alice" else ""
                client = await run_tunnelc(
                    cluster.client_toml(first, user=user)
                    + http_proxy("web", app.port, customDomains=[domain])
                    + extra
                )
                await client.proxy_endpoint("web")
                if extra:
                    assert (await client.proxy_endpoint("db")).port == fixed
            # a fixed remotePort is bound by its owner alone, without SO_REUSEPORT: no other
            # socket can share it, even one that sets SO_REUSEPORT itself
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                with pytest.raises(OSError):
                    probe.bind(("127.0.0.1", fixed))
            for _ in range(REQUESTS):
                for domain, user in DOMAINS.items():
                    reply = await served(first.vhost_port, domain)
                    assert reply.status == 200, (domain, reply.text)
                    assert reply.json()["app"] == user
            # the kernel spread the 40 connections: some landed on a non-owner and were relayed
            logs = [*first.process.lines(), *second.process.lines()]
            assert any(LINK_UP.search(line) for line in logs), logs


# -- tunneld --workers N ------------------------------------------------------------------------

WORKER_STARTED: Final = re.compile(r"worker (\d) started \(pid (\d+)\)")


def unused_port() -> int:
    """A port the OS just handed out (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unused_port_pair() -> int:
    """A port p with p + 1 also free just now (the workers' dashboards take p and p + 1)."""
    while True:
        port = unused_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


async def start_workers(
    run_tunneld: Any, tmp_path: Path, redis_url: str, **kw: Any
) -> tuple[TunnelProcess, dict[int, int], int]:
    """`tunneld --workers 2` on fixed ports; waits for both workers' ready lines. Returns the
    parent, the workers' pids by index, and the shared control port."""
    control, web = unused_port(), unused_port_pair()
    options = {
        "bindAddr": "127.0.0.1",
        "bindPort": control,
        "vhostHTTPPort": unused_port(),
        "auth.token": "workers-token",
        "cluster.redisURL": redis_url,
        "cluster.nodeName": "box",
        "cluster.secret": SECRET,
        "webServer.port": web,
    }
    parent = await run_tunneld(toml_lines(options), args=["--workers", "2"], wait_ready=False, **kw)
    for name in ("box-w0", "box-w1"):
        await parent.wait_for(re.compile(rf"cluster: node {name} joined"))
    ready = [line for line in parent.lines() if "ready: control on" in line]
    assert len(ready) == 2 and all(f"127.0.0.1:{control}" in line for line in ready), ready
    dashboards = {line.rsplit(":", 1)[1] for line in parent.lines() if "ready: dashboard" in line}
    assert dashboards == {f"{web}/", f"{web + 1}/"}, dashboards  # each worker its own
    pids = {int(m[1]): int(m[2]) for line in parent.lines() if (m := WORKER_STARTED.search(line))}
    assert sorted(pids) == [0, 1]
    return parent, pids, control


async def test_workers_launcher_starts_and_stops_its_workers(
    run_tunneld: Any, tmp_path: Path
) -> None:
    """`tunneld --workers 2`: two nodes named box-w0 and box-w1 on one control port; a reload
    keeps each worker's own dashboard port; SIGTERM to the parent stops both (exit 0)."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        parent, pids, _ = await start_workers(run_tunneld, tmp_path, redis.url)
        since = parent.line_count
        parent.send_signal(signal.SIGHUP)  # `tunneld reload`: each worker keeps its own name
        reloads: list[str] = []
        while len(reloads) < len(pids):  # both workers log it; the lines are polled
            await asyncio.sleep(POLL_S)
            reloads = [line for line in parent.lines(since) if "reloaded the config" in line]
        assert not any("need a restart" in line for line in reloads), reloads
        parent.send_signal(signal.SIGTERM)
        assert await parent.wait() == 0, parent.describe()
        for index in pids:
            assert any(f"worker {index} stopped (code 0)" in line for line in parent.lines())
        for pid in pids.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


async def test_workers_launcher_reports_a_dead_worker(run_tunneld: Any, tmp_path: Path) -> None:
    """A worker killed with SIGKILL is reported, the other is stopped, and the parent exits 1
    (for its supervisor to restart the service)."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        parent, pids, _ = await start_workers(run_tunneld, tmp_path, redis.url, expect_exit_code=1)
        os.kill(pids[1], signal.SIGKILL)
        assert await parent.wait() == 1, parent.describe()
        await parent.wait_for(rf"worker 1 \(pid {pids[1]}\) exited with code -9")
        assert any("worker 0 stopped" in line for line in parent.lines())


async def test_workers_launcher_needs_a_redis_url(run_tunneld: Any) -> None:
    """`--workers` without cluster.redisURL is a one-line error and exit 1."""
    parent = await run_tunneld(
        "bindPort = 7000\n", args=["--workers", "2"], wait_ready=False, expect_exit_code=1
    )
    assert await parent.wait() == 1
    assert any("--workers needs cluster.redisURL" in line for line in parent.lines())
    assert not any("Traceback" in line for line in parent.lines())
