"""Stream floods on one proxy, against the real tunneld and tunnelc: the client's other
proxies keep working, limits are counted in /metrics, and memory per idle stream is measured."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Final

import aiohttp

from tests.support.echo import tcp_echo_server
from tests.support.procs import DASHBOARD_READY, TunnelProcess

from .conftest import TunnelLauncher
from .test_prelogin_attacks_e2e import rss_kib

IDLE_STREAMS: Final = 1100  # more than the old session-wide limit of 1024
SMALL_LIMIT: Final = 100  # maxStreamsPerProxy in the limit test
OVER_LIMIT: Final = 150
BATCH: Final = 100  # connections opened concurrently
TEST_TIMEOUT_S: Final = 180.0

SERVER_TOML: Final = 'bindAddr = "127.0.0.1"\nbindPort = 0\n'
CLIENT_TOML: Final = """\
serverAddr = "127.0.0.1"
serverPort = {port}
transport.tls.serverFingerprint = "{fingerprint}"

[[proxies]]
name = "flooded"
type = "tcp"
localPort = {echo_a}
remotePort = 0

[[proxies]]
name = "other"
type = "tcp"
localPort = {echo_b}
remotePort = 0
"""


async def echo_once(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await reader.read()
    finally:
        writer.close()


async def open_idle(port: int) -> tuple[asyncio.StreamWriter | None, bool]:
    """One visitor connection that proves it reached the service (one byte echoed), then
    idles. Returns the writer and whether the echo came back (False: refused, by a reset that
    may even beat the end of connect())."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionError:
        return None, False
    writer.write(b"x")
    try:
        return writer, await reader.read(1) == b"x"
    except ConnectionError:
        return writer, False


@contextlib.asynccontextmanager
async def idle_visitors(port: int, count: int) -> AsyncIterator[list[bool]]:
    """`count` idle connections through a proxy, held for the block; yields which got through."""
    writers: list[asyncio.StreamWriter | None] = []
    through: list[bool] = []
    try:
        for start in range(0, count, BATCH):
            opened = await asyncio.gather(
                *(open_idle(port) for _ in range(min(BATCH, count - start)))
            )
            writers.extend(writer for writer, _ in opened)
            through.extend(ok for _, ok in opened)
        yield through
    finally:
        for writer in writers:
            if writer is not None:
                writer.transport.abort()


async def start_pair(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher, server_extra: str, a: int, b: int
) -> tuple[TunnelProcess, TunnelProcess, int, int]:
    server = await run_tunneld(SERVER_TOML + server_extra)
    control = await server.control_address()
    client = await run_tunnelc(
        CLIENT_TOML.format(
            port=control.port, fingerprint=await server.fingerprint(), echo_a=a, echo_b=b
        )
    )
    flooded = await client.proxy_endpoint("flooded")
    other = await client.proxy_endpoint("other")
    return server, client, flooded.port, other.port


async def test_stream_flood_of_1100_idle_connections_leaves_other_proxies_working(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher
) -> None:
    """1,100 idle connections to one tcp proxy all get through, and the same client's other
    proxy still answers; RSS per idle stream is measured on both sides."""
    async with asyncio.timeout(TEST_TIMEOUT_S), tcp_echo_server() as a, tcp_echo_server() as b:
        server, client, flooded, other = await start_pair(
            run_tunneld, run_tunnelc, "", a.port, b.port
        )
        assert await echo_once(other) == b"ping"
        before = rss_kib(server.pid), rss_kib(client.pid)
        async with idle_visitors(flooded, IDLE_STREAMS) as through:
            after = rss_kib(server.pid), rss_kib(client.pid)
            assert all(through), f"{through.count(False)} of {IDLE_STREAMS} refused"
            assert await echo_once(other) == b"ping"
        per_stream = [(x - y) / IDLE_STREAMS for x, y in zip(after, before, strict=True)]
        print(
            f"idle streams: {IDLE_STREAMS}; tunneld {before[0]} -> {after[0]} KiB "
            f"({per_stream[0]:.1f} KiB/stream), tunnelc {before[1]} -> {after[1]} KiB "
            f"({per_stream[1]:.1f} KiB/stream)"
        )
        assert per_stream[0] < 64  # an idle stream is small (docs/security.md has the number)


async def metric(base: str, name: str, labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(base + "metrics") as response:
        text = await response.text()
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name}{{{labels}}} not in /metrics"
    return float(match[1])


async def test_stream_limit_per_proxy_refuses_the_excess_and_counts_it(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher
) -> None:
    """With maxStreamsPerProxy = 100, 150 connections to one proxy: 100 get through, 50 are
    refused and counted in /metrics, and the client's other proxy still answers."""
    extra = (
        f"maxStreamsPerProxy = {SMALL_LIMIT}\nenablePrometheus = true\n"
        'webServer.addr = "127.0.0.1"\nwebServer.port = 0\n'
    )
    async with asyncio.timeout(TEST_TIMEOUT_S), tcp_echo_server() as a, tcp_echo_server() as b:
        server, _, flooded, other = await start_pair(
            run_tunneld, run_tunnelc, extra, a.port, b.port
        )
        dashboard = await server.wait_for(DASHBOARD_READY)
        base = f"http://{dashboard['host']}:{dashboard['port']}/"
        async with idle_visitors(flooded, OVER_LIMIT) as through:
            assert through.count(True) == SMALL_LIMIT
            assert await echo_once(other) == b"ping"
            refused = await metric(base, "tunnelkit_proxy_refused_flows_total", 'proxy="flooded"')
            assert refused == OVER_LIMIT - SMALL_LIMIT
        await server.wait_for("refusing visitor connections")
