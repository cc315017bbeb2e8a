"""The real processes carrying UDP: dig against dnsmasq, and many concurrent DNS clients."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from pathlib import Path

import pytest

from tests.support.peers import dnsmasq, reserve_port, run_command, tools_unavailable_reason

TOKEN = "udp-e2e-token"
RECORDS = {"office.example": "10.1.2.3", "printer.example": "10.1.2.4"}


def server_toml() -> str:
    return f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n'


def client_toml(port: int, fingerprint: str, dns_port: int) -> str:
    return (
        f'serverAddr = "127.0.0.1"\nserverPort = {port}\nauth.token = "{TOKEN}"\n'
        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
        f'[[proxies]]\nname = "dns"\ntype = "udp"\nlocalPort = {dns_port}\nremotePort = 0\n'
    )


def dns_query(query_id: int, name: str) -> bytes:
    """A minimal DNS query for an A record (RFC 1035 section 4)."""
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return header + labels + b"\x00" + struct.pack(">HH", 1, 1)


def answer_address(reply: bytes) -> str:
    """The first A record's address in a DNS reply (the answer is the last 4 bytes here)."""
    ancount = struct.unpack(">H", reply[6:8])[0]
    assert ancount >= 1, "no answer"
    return socket.inet_ntoa(reply[-4:])


@pytest.fixture
async def dns_tunnel(run_tunneld, run_tunnelc, tmp_path: Path):  # type: ignore[no-untyped-def]
    if reason := tools_unavailable_reason("dnsmasq", "dig"):
        pytest.skip(reason)
    async with dnsmasq(tmp_path, RECORDS) as dns:
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        client = await run_tunnelc(client_toml(control.port, await server.fingerprint(), dns.port))
        public = await client.proxy_endpoint("dns")
        yield dns, public.port, server, client


async def test_dig_through_the_tunnel_gets_the_local_answer(dns_tunnel) -> None:  # type: ignore[no-untyped-def]
    """dig asks the server's public UDP port and gets dnsmasq's answer from behind the tunnel."""
    _, port, _, _ = dns_tunnel
    async with asyncio.timeout(30):
        out = await run_command(
            ["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=3", "+tries=2",
             "office.example", "A"]
        )  # fmt: skip
        assert out.split() == ["10.1.2.3"]


async def test_thousand_queries_from_fifty_sockets_all_answered_correctly(dns_tunnel) -> None:  # type: ignore[no-untyped-def]
    """1,000 queries from 50 concurrent sockets: every one answered, each to its own socket."""
    _, port, _, _ = dns_tunnel
    loop = asyncio.get_running_loop()
    per_socket = 20
    names = list(RECORDS)

    async def one_socket(index: int) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        answered = 0
        try:
            for n in range(per_socket):
                query_id = (index * per_socket + n) & 0xFFFF
                name = names[(index + n) % len(names)]
                for _attempt in range(5):  # UDP: a lost datagram is retried, boundedly
                    await loop.sock_sendall(sock, dns_query(query_id, name))
                    try:
                        async with asyncio.timeout(2):
                            reply = await loop.sock_recv(sock, 4096)
                    except TimeoutError:
                        continue
                    assert struct.unpack(">H", reply[:2])[0] == query_id, "answer for another query"
                    assert answer_address(reply) == RECORDS[name]
                    answered += 1
                    break
        finally:
            sock.close()
        return answered

    async with asyncio.timeout(120):
        counts = await asyncio.gather(*(one_socket(i) for i in range(50)))
    assert sum(counts) == 50 * per_socket


async def test_udp_proxy_port_released_when_client_stops(dns_tunnel) -> None:  # type: ignore[no-untyped-def]
    """When the client goes away its public UDP port is free again at once."""
    _, port, server, client = dns_tunnel
    async with asyncio.timeout(30):
        await client.terminate()
        await server.wait_for("client .* disconnected")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port))
        finally:
            probe.close()


async def ask_until_answered(sock: socket.socket, name: str, tries: int = 20) -> str:
    """Ask over a connected UDP socket until an answer comes (bounded; UDP may lose some)."""
    loop = asyncio.get_running_loop()
    for _attempt in range(tries):
        await loop.sock_sendall(sock, dns_query(random.randrange(65536), name))
        try:
            async with asyncio.timeout(1):
                return answer_address(await loop.sock_recv(sock, 4096))
        except TimeoutError:
            continue
    raise AssertionError(f"no answer after {tries} tries")


async def test_udp_peer_is_answered_again_after_the_client_reconnects(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """tunneld restarts: tunnelc reconnects, gets the same public port, and a peer that kept
    its socket is answered again (with a new flow)."""
    if reason := tools_unavailable_reason("dnsmasq"):
        pytest.skip(reason)
    control_port = reserve_port(socket.SOCK_STREAM)
    config = server_toml().replace("bindPort = 0", f"bindPort = {control_port}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(60), dnsmasq(tmp_path, RECORDS) as dns:
            first = await run_tunneld(config)
            client = await run_tunnelc(
                client_toml(control_port, await first.fingerprint(), dns.port)
            )
            public = await client.proxy_endpoint("dns")
            sock.connect(("127.0.0.1", public.port))
            assert await ask_until_answered(sock, "printer.example") == "10.1.2.4"
            mark = client.line_count
            await first.terminate()
            await run_tunneld(config)  # same state: same certificate
            again = await client.wait_for(r"proxy dns ready at udp://\S+:(\d+)", 30, since=mark)
            assert int(again[1]) == public.port  # remotePort 0, yet the same port again
            assert await ask_until_answered(sock, "printer.example") == "10.1.2.4"
    finally:
        sock.close()
