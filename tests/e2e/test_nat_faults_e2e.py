"""Faults across a NAT, in network namespaces: a client crash whose connection goes silent, a
control connection whose packets the NAT drops, and a partition that heals.

Each test prints a `measured:` line with the times it saw; docs/resilience.md quotes them.
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.test_tcp_e2e import OFFICE_ECHO, VPS_CLIENT, client_toml, server_toml, tcp_proxy
from tests.support.netns import NatTopology
from tests.support.peers import run_command
from tests.support.procs import ProcessGroup, TunnelProcess

NAT_TEST_TIMEOUT_S = 120
HEARTBEAT_INTERVAL_S = 1
HEARTBEAT_TIMEOUT_S = 3
DIAL_TIMEOUT_S = 2
# Detection: TCP_USER_TIMEOUT (one interval) after the first unanswered ping, or the
# heartbeat timeout; both well inside this.
DETECT_BOUND_S = HEARTBEAT_TIMEOUT_S + 4
# Recovery after the network is back: at most one backoff delay (capped at 10 s) plus a dial.
RECOVER_BOUND_S = 10 + DIAL_TIMEOUT_S + 4
PARTITION_S = 8


@dataclass(slots=True)
class NatTunnel:
    nat: NatTopology
    server: TunnelProcess
    client: TunnelProcess
    config: Path
    home: Path
    public_port: int


async def iptables(nat: NatTopology, *args: str) -> None:
    await run_command(NatTopology.exec_argv(nat.router, ["iptables", *args]))


async def vps_echo(nat: NatTopology, port: int) -> str:
    argv = [sys.executable, "-c", VPS_CLIENT, nat.vps_ip, str(port)]
    return await run_command(NatTopology.exec_argv(nat.vps, argv))


async def start_client(
    group: ProcessGroup, tunnel_config: Path, home: Path, nat: NatTopology, name: str
) -> TunnelProcess:
    return await group.start_tunnel(
        "tunnelc",
        ["-c", str(tunnel_config)],
        name=name,
        netns=nat.office,
        env={"HOME": str(home)},
        expect_exit_code=None,
    )


async def nat_tunnel(
    nat: NatTopology, group: ProcessGroup, run_tunneld, tmp_path: Path, *, fast: bool
) -> NatTunnel:
    """tunneld in the vps, tunnelc in the office exposing an office echo service."""
    service = await group.start(
        NatTopology.exec_argv(nat.office, [sys.executable, "-c", OFFICE_ECHO, nat.office_ip]),
        name="office-echo",
        expect_exit_code=None,
    )
    service_port = int((await service.wait_for(r"listening on (\d+)"))[1])
    extra = {"transport.heartbeatTimeout": HEARTBEAT_TIMEOUT_S} if fast else {}
    server = await run_tunneld(
        server_toml(**extra).replace('bindAddr = "127.0.0.1"', f'bindAddr = "{nat.vps_ip}"'),
        netns=nat.vps,
        expect_exit_code=None,
    )
    control = await server.control_address()
    client_extra = (
        {
            "transport.heartbeatInterval": HEARTBEAT_INTERVAL_S,
            "transport.heartbeatTimeout": HEARTBEAT_TIMEOUT_S,
            "transport.dialServerTimeout": DIAL_TIMEOUT_S,
        }
        if fast
        else {}
    )
    config = tmp_path / "frpc-nat.toml"
    config.write_text(
        client_toml(
            control.port,
            await server.fingerprint(),
            tcp_proxy("office", service_port, local_ip=nat.office_ip),
            **client_extra,
        ).replace('serverAddr = "127.0.0.1"', f'serverAddr = "{nat.vps_ip}"')
    )
    home = tmp_path / "home-office"
    home.mkdir()
    client = await start_client(group, config, home, nat, "tunnelc")
    public = await client.proxy_endpoint("office")
    assert "reply: hello from the vps" in await vps_echo(nat, public.port)
    return NatTunnel(nat, server, client, config, home, public.port)


async def test_client_crash_behind_nat_is_back_within_seconds(
    nat: NatTopology, process_group: ProcessGroup, run_tunneld, tmp_path: Path
) -> None:
    """The client dies and its connection goes silent at the NAT; the restart replaces the
    stale session at once (same stable id) and its proxy is back within seconds."""
    async with asyncio.timeout(NAT_TEST_TIMEOUT_S):
        t = await nat_tunnel(nat, process_group, run_tunneld, tmp_path, fast=False)
        login = await t.client.wait_for(r"logged in to \S+ as (?P<id>\S+)")
        # A crashed machine sends nothing: drop the FIN/RST the kernel sends for the dead
        # process, so the server keeps a silent session (heartbeatTimeout is 90 s here).
        silence = [
            ["FORWARD", "-i", "lan0", "-p", "tcp", "--tcp-flags", flag, flag, "-j", "DROP"]
            for flag in ("RST", "FIN")
        ]
        for rule in silence:
            await iptables(nat, "-I", *rule)
        t.client.kill()
        await t.client.wait()
        loop = asyncio.get_running_loop()
        started = loop.time()
        again = await start_client(process_group, t.config, t.home, nat, "tunnelc-restarted")
        await again.wait_for(rf"logged in to \S+ as {re.escape(login['id'])}$")
        public = await again.proxy_endpoint("office")
        back_s = loop.time() - started
        await t.server.wait_for("replacing its old session")
        for rule in silence:
            await iptables(nat, "-D", *rule)
        assert "reply: hello from the vps" in await vps_echo(nat, public.port)
        print(f"measured: client crash behind NAT: proxies back {back_s:.2f}s after restart")
        assert back_s < 10


async def test_silent_control_connection_is_detected_and_replaced(
    nat: NatTopology, process_group: ProcessGroup, run_tunneld, tmp_path: Path
) -> None:
    """The NAT silently drops the control connection's packets: both sides notice within the
    heartbeat timeout, and the client is back on a new connection."""
    async with asyncio.timeout(NAT_TEST_TIMEOUT_S):
        t = await nat_tunnel(nat, process_group, run_tunneld, tmp_path, fast=True)
        seen = await t.server.wait_for(r"logged in from [\d.]+:(?P<port>\d+)")
        mark = t.client.line_count
        server_mark = t.server.line_count
        # In FORWARD the office side's port shows in both directions (NAT keeps it when free).
        rule = ["FORWARD", "-p", "tcp", "-m", "multiport", "--ports", seen["port"], "-j", "DROP"]
        await iptables(nat, "-I", *rule)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await t.client.wait_for("disconnected from the server", since=mark)
        detect_s = loop.time() - started
        await t.server.wait_for(r"client \S+ (disconnected|reconnected)", since=server_mark)
        public = await t.client.proxy_endpoint("office", since=mark)
        back_s = loop.time() - started
        assert "reply: hello from the vps" in await vps_echo(nat, public.port)
        await iptables(nat, "-D", *rule)
        print(f"measured: silent control connection: detected {detect_s:.2f}s, back {back_s:.2f}s")
        assert detect_s < DETECT_BOUND_S
        assert back_s < DETECT_BOUND_S + RECOVER_BOUND_S


async def test_partition_is_detected_and_heals_promptly(
    nat: NatTopology, process_group: ProcessGroup, run_tunneld, tmp_path: Path
) -> None:
    """All traffic through the NAT is dropped for a while: the client notices within the
    heartbeat timeout, keeps redialling, and is back soon after the network heals."""
    async with asyncio.timeout(NAT_TEST_TIMEOUT_S):
        t = await nat_tunnel(nat, process_group, run_tunneld, tmp_path, fast=True)
        mark = t.client.line_count
        partition = ["FORWARD", "-j", "DROP"]
        await iptables(nat, "-I", *partition)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await t.client.wait_for("disconnected from the server", since=mark)
        detect_s = loop.time() - started
        await t.client.wait_for("cannot reach the server", since=mark)  # redialling
        await asyncio.sleep(max(0.0, PARTITION_S - (loop.time() - started)))  # the outage
        redial_mark = t.client.line_count
        await iptables(nat, "-D", *partition)
        healed = loop.time()
        public = await t.client.proxy_endpoint(
            "office", timeout=RECOVER_BOUND_S + 10, since=redial_mark
        )
        back_s = loop.time() - healed
        assert "reply: hello from the vps" in await vps_echo(nat, public.port)
        print(
            f"measured: partition of {healed - started:.1f}s: detected {detect_s:.2f}s, "
            f"back {back_s:.2f}s after the heal"
        )
        assert detect_s < DETECT_BOUND_S
        assert back_s < RECOVER_BOUND_S
