"""Attacks on bindPort before login, against the real tunneld: floods must delay, never lock out.

Every flood comes from 127.0.0.1, the same address as the good client, so per-address limits
cannot save the good client by refusing the attacker's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from tests.support.procs import TunnelProcess

from .conftest import TunnelLauncher

IDLE_SOCKETS: Final = 200
STALLED_HANDSHAKES: Final = 50
GARBAGE_CONNECTIONS: Final = 150
EARLY_CLOSES: Final = 50
LOGIN_DEADLINE_S: Final = 10.0  # the bound for a good client under a flood
RSS_GROWTH_LIMIT_KIB: Final = 128 * 1024  # pending connections are bounded; so is memory
TEST_TIMEOUT_S: Final = 90.0
# A TLS record header announcing a 512-byte handshake message, then 100 of those bytes.
STALLED_HELLO: Final = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC]) + bytes(91)

SERVER_TOML: Final = 'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "flood-T0k"\n'
CLIENT_TOML: Final = """\
serverAddr = "127.0.0.1"
serverPort = {port}
auth.token = "flood-T0k"
transport.tls.serverFingerprint = "{fingerprint}"
"""


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@contextlib.asynccontextmanager
async def held_sockets(
    port: int, count: int, first_bytes: bytes
) -> AsyncIterator[list[socket.socket]]:
    """`count` connections to 127.0.0.1:port that send `first_bytes` (maybe none) and then
    stall, held open until the block ends."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            socks.append(sock)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            if first_bytes:
                await loop.sock_sendall(sock, first_bytes)
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def garbage_then_close(port: int, payload: bytes) -> None:
    """One connection that sends `payload` (no TLS) and waits for the server to end it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if payload:
            writer.write(payload)
            with contextlib.suppress(ConnectionError):
                await reader.read()  # the server's alert, then EOF (or a reset)
    finally:
        writer.transport.abort()


async def start_server(run_tunneld: TunnelLauncher) -> tuple[TunnelProcess, int, str]:
    server = await run_tunneld(SERVER_TOML, args=("--log-level", "debug"))
    control = await server.control_address()
    return server, control.port, await server.fingerprint()


async def timed_login(run_tunnelc: TunnelLauncher, port: int, fingerprint: str) -> float:
    """Start a good tunnelc; return the seconds until its login line."""
    started = time.monotonic()
    await run_tunnelc(
        CLIENT_TOML.format(port=port, fingerprint=fingerprint), ready_timeout=LOGIN_DEADLINE_S
    )
    return time.monotonic() - started


async def test_prelogin_flood_of_idle_sockets_and_stalled_handshakes_delays_a_good_client(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher
) -> None:
    """200 idle sockets and 50 stalled handshakes from the client's own address: it still
    logs in within 10 s, and tunneld's memory stays bounded."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server, port, fingerprint = await start_server(run_tunneld)
        before = rss_kib(server.pid)
        async with (
            held_sockets(port, IDLE_SOCKETS, b""),
            held_sockets(port, STALLED_HANDSHAKES, STALLED_HELLO),
        ):
            during = rss_kib(server.pid)
            elapsed = await timed_login(run_tunnelc, port, fingerprint)
            peak = max(during, rss_kib(server.pid))
        assert elapsed < LOGIN_DEADLINE_S
        assert peak - before < RSS_GROWTH_LIMIT_KIB, (before, peak)
        print(f"flood: login in {elapsed:.2f}s; tunneld RSS {before} -> {peak} KiB")


async def test_prelogin_garbage_and_early_closes_do_not_lock_out_logins(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher
) -> None:
    """150 garbage handshakes and 50 connections closed before TLS free their slots: a good
    client still logs in within 10 s (on the old code every failed handshake leaked a slot)."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server, port, fingerprint = await start_server(run_tunneld)
        before = rss_kib(server.pid)
        await asyncio.gather(
            *(
                garbage_then_close(port, b"GET / HTTP/1.0\r\n\r\n")
                for _ in range(GARBAGE_CONNECTIONS)
            )
        )
        await asyncio.gather(*(garbage_then_close(port, b"") for _ in range(EARLY_CLOSES)))
        elapsed = await timed_login(run_tunnelc, port, fingerprint)
        assert elapsed < LOGIN_DEADLINE_S
        after = rss_kib(server.pid)
        assert after - before < RSS_GROWTH_LIMIT_KIB, (before, after)
        print(f"garbage: login in {elapsed:.2f}s; tunneld RSS {before} -> {after} KiB")
