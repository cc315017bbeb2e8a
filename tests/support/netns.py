"""A NAT topology in network namespaces (root only), for tests of the tunnel across NAT.

    office (10.200.1.2) --lan-- nat router (10.200.1.1 | 10.200.2.1) --wan-- vps (10.200.2.2)

- `office` is the client's home network: a private /24 whose default route is the router.
- The router masquerades everything from the office out of its wan side, and its FORWARD
  chain drops new connections coming in from the wan: a home router, NAT plus stateful
  firewall. So the office can reach the vps, and the vps sees only 10.200.2.1; the vps
  cannot reach the office even though its default route points at the router.
- Run `tunneld` in `vps` and `tunnelc` in `office` (`netns=` of ProcessGroup.start, or
  `topology.exec_argv`). Every address lives inside these namespaces.

Names carry a random suffix, so tests can build topologies side by side; the veth pairs are
created directly inside their namespaces, so nothing appears in the root namespace, and
`nat_topology()` deletes the namespaces on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from tests.support.peers import find_tool, run_command
from tests.support.procs import LoggedProcess

logger = logging.getLogger(__name__)

OFFICE_IP: Final = "10.200.1.2"
ROUTER_LAN_IP: Final = "10.200.1.1"
ROUTER_WAN_IP: Final = "10.200.2.1"
VPS_IP: Final = "10.200.2.2"
OFFICE_SUBNET: Final = "10.200.1.0/24"
PREFIX_LEN: Final = 24
COMMAND_TIMEOUT_S: Final = 20.0  # one `ip`/`iptables` command
PROBE_TIMEOUT_S: Final = 1.0  # a TCP connect that NAT should block gives up after this
LISTENER_READY_S: Final = 10.0  # python start-up inside a namespace
NAME_SUFFIX_BYTES: Final = 3  # 6 hex digits: "tk1a2b3c-office"


def netns_unavailable_reason() -> str | None:
    """Why NAT topologies cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [tool for tool in ("ip", "iptables") if find_tool(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (iproute2, iptables)"
    return None


@dataclass(frozen=True, slots=True)
class NatTopology:
    office: str  # namespace of the client side (private network)
    router: str  # namespace of the NAT router
    vps: str  # namespace of the server side (public network)
    office_ip: str = OFFICE_IP
    vps_ip: str = VPS_IP
    router_wan_ip: str = ROUTER_WAN_IP  # what the vps sees as the office's address

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.office, self.router, self.vps)

    @staticmethod
    def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside `netns`. `ip netns exec` execs, so the pid is the program's."""
        return ["ip", "netns", "exec", netns, *argv]


def _setup_commands(t: NatTopology) -> list[list[str]]:
    office, router, vps = t.namespaces
    lines = [
        *(f"ip netns add {ns}" for ns in t.namespaces),
        # Both ends of each veth pair are born inside their namespaces.
        f"ip link add eth0 netns {office} type veth peer name lan0 netns {router}",
        f"ip link add wan0 netns {router} type veth peer name eth0 netns {vps}",
        f"ip -n {office} addr add {OFFICE_IP}/{PREFIX_LEN} dev eth0",
        f"ip -n {router} addr add {ROUTER_LAN_IP}/{PREFIX_LEN} dev lan0",
        f"ip -n {router} addr add {ROUTER_WAN_IP}/{PREFIX_LEN} dev wan0",
        f"ip -n {vps} addr add {VPS_IP}/{PREFIX_LEN} dev eth0",
        *(f"ip -n {ns} link set lo up" for ns in t.namespaces),
        f"ip -n {office} link set eth0 up",
        f"ip -n {router} link set lan0 up",
        f"ip -n {router} link set wan0 up",
        f"ip -n {vps} link set eth0 up",
        f"ip -n {office} route add default via {ROUTER_LAN_IP}",
        f"ip -n {vps} route add default via {ROUTER_WAN_IP}",
        f"ip netns exec {router} sysctl -q -w net.ipv4.ip_forward=1",
        f"ip netns exec {router} iptables -t nat -A POSTROUTING -s {OFFICE_SUBNET} -o wan0"
        " -j MASQUERADE",
        # A home router: out of the lan freely; in from the wan only what answers the lan.
        f"ip netns exec {router} iptables -P FORWARD DROP",
        f"ip netns exec {router} iptables -A FORWARD -i lan0 -o wan0 -j ACCEPT",
        f"ip netns exec {router} iptables -A FORWARD -i wan0 -o lan0"
        " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    ]
    return [line.split() for line in lines]


async def delete_namespaces(names: Sequence[str]) -> list[str]:
    """Delete these namespaces (their veths go with them); return the ones that failed."""
    existing = set((await run_command(["ip", "netns", "list"])).split())
    failed = []
    for name in names:
        if name not in existing:
            continue
        try:
            await run_command(["ip", "netns", "del", name])
        except AssertionError:
            logger.exception("could not delete network namespace %s", name)
            failed.append(name)
    return failed


@contextlib.asynccontextmanager
async def nat_topology(prefix: str = "tk") -> AsyncIterator[NatTopology]:
    """Build office -> NAT router -> vps; always delete the namespaces on exit."""
    reason = netns_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    suffix = secrets.token_hex(NAME_SUFFIX_BYTES)
    topology = NatTopology(
        office=f"{prefix}{suffix}-office",
        router=f"{prefix}{suffix}-nat",
        vps=f"{prefix}{suffix}-vps",
    )
    try:
        for argv in _setup_commands(topology):
            await run_command(argv)
        yield topology
    finally:
        failed = await delete_namespaces(topology.namespaces)
        if failed:
            raise AssertionError(f"network namespaces left behind: {failed}")


# -- proving the NAT -----------------------------------------------------------------------

# A listener that reports its port and the address of each peer, for a bounded number of
# accepts; it is stopped by SIGTERM.
_LISTENER: Final = """
import socket, sys
with socket.create_server((sys.argv[1], 0)) as server:
    print("listening on", server.getsockname()[1], flush=True)
    for _ in range(int(sys.argv[2])):
        conn, peer = server.accept()
        print("accepted from", peer[0], flush=True)
        conn.close()
"""
_LISTENER_MAX_ACCEPTS: Final = 16

_CONNECT: Final = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as exc:
    sys.exit(f"connect failed: {exc!r}")
"""


async def tcp_connects(
    netns: str, host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S
) -> bool:
    """Whether a TCP connect from inside `netns` to host:port succeeds within `timeout_s`."""
    argv = NatTopology.exec_argv(
        netns, [sys.executable, "-c", _CONNECT, host, str(port), str(timeout_s)]
    )
    try:
        await run_command(argv, timeout_s + COMMAND_TIMEOUT_S)
    except AssertionError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NatReport:
    office_reaches_itself: bool  # the office listener is up (so a failure below means NAT)
    office_reaches_vps: bool  # outbound works
    vps_sees_office_as: str | None  # source address the vps saw: the router's wan address
    vps_reaches_office: bool  # inbound: must be False


async def check_nat(topology: NatTopology, timeout_s: float = PROBE_TIMEOUT_S) -> NatReport:
    """Probe both directions across the router with real listeners on each side."""
    listeners: list[LoggedProcess] = []
    try:
        ports: dict[str, int] = {}
        for netns, address in (
            (topology.office, topology.office_ip),
            (topology.vps, topology.vps_ip),
        ):
            argv = NatTopology.exec_argv(
                netns, [sys.executable, "-c", _LISTENER, address, str(_LISTENER_MAX_ACCEPTS)]
            )
            proc = await LoggedProcess.start(argv, name=f"listener-{netns}")
            listeners.append(proc)
            match = await proc.wait_for(r"listening on (\d+)", LISTENER_READY_S)
            ports[netns] = int(match[1])
        vps_listener = listeners[1]
        office_port, vps_port = ports[topology.office], ports[topology.vps]

        local = await tcp_connects(topology.office, topology.office_ip, office_port, timeout_s)
        outbound = await tcp_connects(topology.office, topology.vps_ip, vps_port, timeout_s)
        seen_as = None
        if outbound:
            seen = await vps_listener.wait_for(r"accepted from (\S+)", LISTENER_READY_S)
            seen_as = seen[1]
        inbound = await tcp_connects(topology.vps, topology.office_ip, office_port, timeout_s)
        return NatReport(local, outbound, seen_as, inbound)
    finally:
        for proc in listeners:
            await proc.terminate(expect_exit_code=None)
            proc.close()


async def assert_nat_blocks_inbound(topology: NatTopology) -> NatReport:
    """Fail unless office -> vps works (masqueraded) and vps -> office does not."""
    report = await check_nat(topology)
    assert report.office_reaches_itself, f"office listener unreachable even locally: {report}"
    assert report.office_reaches_vps, f"office cannot reach the vps: {report}"
    assert report.vps_sees_office_as == topology.router_wan_ip, f"no masquerade: {report}"
    assert not report.vps_reaches_office, f"the vps reached the office through NAT: {report}"
    return report


# -- two clients, each behind its own NAT (xtcp) --------------------------------------------
#
#   office-a (10.201.1.2) -- nat-a (10.201.1.1 | 10.201.0.2) --+
#                                                              +-- br0 in `inet` (10.201.0.1:
#   office-b (10.201.2.2) -- nat-b (10.201.2.1 | 10.201.0.3) --+     tunneld lives here)
#
# Both routers masquerade their office and drop what comes in from the wan unless it answers
# their office (FORWARD) and every new connection to themselves (INPUT), as home routers do:
# a SYN that arrives before the office's own SYN opened the mapping is dropped, not reset.
# `symmetric_b` adds `--random-fully` to nat-b: every connection gets a random public port,
# so the port tunneld saw is not the one the peer's SYN would have to reach.

INET_IP: Final = "10.201.0.1"
INET_PREFIX: Final = "10.201.0"
OFFICE_A_IP: Final = "10.201.1.2"
OFFICE_B_IP: Final = "10.201.2.2"


@dataclass(frozen=True, slots=True)
class TwoNats:
    inet: str  # tunneld's namespace (the public network, a bridge both routers join)
    nat_a: str
    nat_b: str
    office_a: str
    office_b: str
    inet_ip: str = INET_IP
    office_a_ip: str = OFFICE_A_IP
    office_b_ip: str = OFFICE_B_IP
    nat_a_wan_ip: str = f"{INET_PREFIX}.2"
    nat_b_wan_ip: str = f"{INET_PREFIX}.3"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.inet, self.nat_a, self.nat_b, self.office_a, self.office_b)


def _router_lines(router: str, office: str, side: int, random_fully: bool) -> list[str]:
    lan, wan = f"10.201.{side}.1", f"{INET_PREFIX}.{side + 1}"
    masquerade = "-j MASQUERADE" + (" --random-fully" if random_fully else "")
    return [
        f"ip link add eth0 netns {office} type veth peer name lan0 netns {router}",
        f"ip -n {office} addr add 10.201.{side}.2/{PREFIX_LEN} dev eth0",
        f"ip -n {router} addr add {lan}/{PREFIX_LEN} dev lan0",
        f"ip -n {router} addr add {wan}/{PREFIX_LEN} dev wan0",
        f"ip -n {office} link set eth0 up",
        f"ip -n {office} link set lo up",
        f"ip -n {router} link set lan0 up",
        f"ip -n {router} link set wan0 up",
        f"ip -n {router} link set lo up",
        f"ip -n {office} route add default via {lan}",
        f"ip netns exec {router} sysctl -q -w net.ipv4.ip_forward=1",
        f"ip netns exec {router} iptables -t nat -A POSTROUTING -s 10.201.{side}.0/24 -o wan0 "
        + masquerade,
        f"ip netns exec {router} iptables -P FORWARD DROP",
        f"ip netns exec {router} iptables -A FORWARD -i lan0 -o wan0 -j ACCEPT",
        f"ip netns exec {router} iptables -A FORWARD -i wan0 -o lan0"
        " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        f"ip netns exec {router} iptables -A INPUT -i wan0 -m conntrack --ctstate NEW -j DROP",
    ]


def _two_nat_commands(t: TwoNats, symmetric_b: bool) -> list[list[str]]:
    lines = [
        *(f"ip netns add {ns}" for ns in t.namespaces),
        f"ip -n {t.inet} link add br0 type bridge",
        f"ip -n {t.inet} addr add {INET_IP}/{PREFIX_LEN} dev br0",
        f"ip -n {t.inet} link set br0 up",
        f"ip -n {t.inet} link set lo up",
    ]
    for side, router in ((1, t.nat_a), (2, t.nat_b)):
        port = f"wan{side}"
        lines += [
            f"ip link add wan0 netns {router} type veth peer name {port} netns {t.inet}",
            f"ip -n {t.inet} link set {port} master br0",
            f"ip -n {t.inet} link set {port} up",
        ]
    lines += _router_lines(t.nat_a, t.office_a, 1, False)
    lines += _router_lines(t.nat_b, t.office_b, 2, symmetric_b)
    return [line.split() for line in lines]


@contextlib.asynccontextmanager
async def two_nat_topology(
    prefix: str = "tx", *, symmetric_b: bool = False
) -> AsyncIterator[TwoNats]:
    """Build the two-NAT network above; always delete its namespaces on exit."""
    reason = netns_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    suffix = secrets.token_hex(NAME_SUFFIX_BYTES)
    t = TwoNats(
        inet=f"{prefix}{suffix}-inet",
        nat_a=f"{prefix}{suffix}-na",
        nat_b=f"{prefix}{suffix}-nb",
        office_a=f"{prefix}{suffix}-oa",
        office_b=f"{prefix}{suffix}-ob",
    )
    try:
        for argv in _two_nat_commands(t, symmetric_b):
            await run_command(argv)
        yield t
    finally:
        failed = await delete_namespaces(t.namespaces)
        if failed:
            raise AssertionError(f"network namespaces left behind: {failed}")
