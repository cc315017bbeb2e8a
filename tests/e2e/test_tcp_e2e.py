"""The real tunneld and tunnelc processes exposing TCP services: ssh, bulk data, NAT, chaos."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from pathlib import Path

import pytest

from tests.support.echo import (
    pattern_digest,
    send_pattern,
    tcp_echo_server,
    tcp_sink_server,
)
from tests.support.netns import NatTopology, assert_nat_blocks_inbound
from tests.support.peers import reserve_port, run_command, sshd, tools_unavailable_reason
from tests.support.procs import ProcessGroup

TOKEN = "e2e-token-123"
GiB = 1 << 30


def server_toml(**extra: object) -> str:
    lines = ['bindAddr = "127.0.0.1"', "bindPort = 0", f'auth.token = "{TOKEN}"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def client_toml(
    port: int, fingerprint: str, proxies: str, token: str = TOKEN, **extra: object
) -> str:
    head = [
        'serverAddr = "127.0.0.1"',
        f"serverPort = {port}",
        f'auth.token = "{token}"',
        f'transport.tls.serverFingerprint = "{fingerprint}"',
    ]
    head += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(head) + "\n" + proxies


def tcp_proxy(name: str, local_port: int, remote_port: int = 0, local_ip: str = "127.0.0.1") -> str:
    return (
        f'[[proxies]]\nname = "{name}"\ntype = "tcp"\nlocalIP = "{local_ip}"\n'
        f"localPort = {local_port}\nremotePort = {remote_port}\n"
    )


async def echo_roundtrip(port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_ssh_into_office_runs_a_command(run_tunneld, run_tunnelc, tmp_path: Path) -> None:
    """A real ssh session reaches a throwaway sshd through the tunnel and runs a command."""
    if reason := tools_unavailable_reason("sshd", "ssh", "ssh-keygen"):
        pytest.skip(reason)
    async with asyncio.timeout(60), sshd(tmp_path) as ssh_server:
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        fingerprint = await server.fingerprint()
        client = await run_tunnelc(
            client_toml(control.port, fingerprint, tcp_proxy("ssh", ssh_server.port))
        )
        public = await client.proxy_endpoint("ssh")
        out = await run_command(
            ["ssh", *ssh_server.ssh_args(port=public.port), "echo tunnel-ok; uname -s"]
        )
        assert "tunnel-ok" in out and "Linux" in out


async def test_tcp_tunnel_carries_one_gib_exactly(run_tunneld, run_tunnelc) -> None:
    """1 GiB sent through the tunnel arrives byte for byte (SHA-256 compared)."""
    async with asyncio.timeout(180), tcp_sink_server() as sink:
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        client = await run_tunnelc(
            client_toml(control.port, await server.fingerprint(), tcp_proxy("sink", sink.port))
        )
        public = await client.proxy_endpoint("sink")
        await send_pattern("127.0.0.1", public.port, GiB, timeout_s=150)
        result = await sink.next_result(timeout_s=150)
        assert result.nbytes == GiB
        assert result.sha256 == pattern_digest(GiB)


async def expect_reset(host: str, port: int) -> None:
    """Connect and send; the connection must end with a reset, never a clean EOF. On a loaded
    machine the reset can arrive before this side's connect call completes: that is a reset
    too."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except ConnectionResetError:
        return
    try:
        # No write_eof here: the reset may already have arrived, and shutdown() on a reset
        # socket fails with ENOTCONN. The write itself may meet the reset too.
        with contextlib.suppress(ConnectionError):
            writer.write(b"anyone there?")
            await writer.drain()
        with pytest.raises(ConnectionResetError):  # a reset, never a clean EOF
            await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_tcp_tunnel_survives_a_dead_local_service(run_tunneld, run_tunnelc) -> None:
    """A local service that is down resets the user's connection at once; the tunnel stays up."""
    dead_port = reserve_port(socket.SOCK_STREAM)
    async with asyncio.timeout(30), tcp_echo_server() as echo:
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        proxies = tcp_proxy("dead", dead_port) + tcp_proxy("echo", echo.port)
        client = await run_tunnelc(client_toml(control.port, await server.fingerprint(), proxies))
        dead = await client.proxy_endpoint("dead")
        live = await client.proxy_endpoint("echo")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await expect_reset("127.0.0.1", dead.port)
        assert loop.time() - started < 5.0
        assert await echo_roundtrip(live.port, b"still up") == b"still up"


async def test_wrong_token_exits_with_a_clear_error(run_tunneld, run_tunnelc) -> None:
    """A wrong token: the client says so and exits 1; the server logs the peer address."""
    async with asyncio.timeout(30):
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        client = await run_tunnelc(
            client_toml(control.port, await server.fingerprint(), "", token="wrong"),
            wait_ready=False,
            expect_exit_code=1,
        )
        # the mutual proof: the client finds the server's proof wrong before sending its own
        await client.wait_for("could not prove that it knows the token")
        assert await client.wait(15) == 1
        await server.wait_for(r"login failed: ip=127\.0\.0\.1 port=\d+ ")
        assert not any("Traceback" in line for line in client.lines())


async def test_client_reconnects_after_server_restart(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """The server restarts on the same port: the client reconnects and re-registers its proxy."""
    control_port = reserve_port(socket.SOCK_STREAM)
    remote_port = reserve_port(socket.SOCK_STREAM)
    config = server_toml().replace("bindPort = 0", f"bindPort = {control_port}")
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        first = await run_tunneld(config)
        fingerprint = await first.fingerprint()
        client = await run_tunnelc(
            client_toml(control_port, fingerprint, tcp_proxy("echo", echo.port, remote_port))
        )
        await client.proxy_endpoint("echo")
        assert await echo_roundtrip(remote_port, b"one") == b"one"
        mark = client.line_count
        await first.terminate()
        await client.wait_for("disconnected from the server", since=mark)
        await run_tunneld(config)  # same state dir: same certificate and fingerprint
        await client.wait_for(r"proxy echo ready at tcp://", timeout=30, since=mark)
        assert await echo_roundtrip(remote_port, b"two") == b"two"


async def test_client_behind_nat_exposes_its_service(
    nat: NatTopology, process_group: ProcessGroup, run_tunneld, run_tunnelc
) -> None:
    """Inbound connections to the office are blocked by NAT, yet the tunnel exposes its service."""
    async with asyncio.timeout(90):
        await assert_nat_blocks_inbound(nat)
        service = await process_group.start(
            NatTopology.exec_argv(nat.office, [sys.executable, "-c", OFFICE_ECHO, nat.office_ip]),
            name="office-echo",
            expect_exit_code=None,
        )
        service_port = int((await service.wait_for(r"listening on (\d+)"))[1])
        server = await run_tunneld(
            server_toml().replace('bindAddr = "127.0.0.1"', f'bindAddr = "{nat.vps_ip}"'),
            netns=nat.vps,
        )
        control = await server.control_address()
        client = await run_tunnelc(
            client_toml(
                control.port,
                await server.fingerprint(),
                tcp_proxy("office", service_port, local_ip=nat.office_ip),
            ).replace('serverAddr = "127.0.0.1"', f'serverAddr = "{nat.vps_ip}"'),
            netns=nat.office,
        )
        public = await client.proxy_endpoint("office")
        await server.wait_for(rf"logged in from {nat.router_wan_ip}:")
        out = await run_command(
            NatTopology.exec_argv(
                nat.vps, [sys.executable, "-c", VPS_CLIENT, nat.vps_ip, str(public.port)]
            )
        )
        assert "reply: hello from the vps" in out


OFFICE_ECHO = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(8)
print("listening on", s.getsockname()[1], flush=True)
for _ in range(16):
    c, _ = s.accept()
    data = c.recv(4096)
    c.sendall(b"reply: " + data); c.close()
"""

VPS_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"hello from the vps"); c.shutdown(socket.SHUT_WR)
print(c.recv(4096).decode())
"""
