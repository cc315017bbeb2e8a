"""A user's bandwidth quota on a real tunneld: one token bucket for all the user's proxies
(tcp both ways and http), measured over 10 s, and changed live with `set-quota`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import pytest

from tests.e2e.test_quota_e2e import http_proxy
from tests.e2e.test_tcp_e2e import tcp_proxy
from tests.e2e.test_users_e2e import add_user, user_client_toml, users_cli, users_server_toml
from tests.support.echo import pattern_chunks, tcp_source_server

RATE: Final = 1024 * 1024  # the quota, "1MB" per second
TOLERANCE: Final = 0.10
WINDOW_S: Final = 10.0
WARMUP_BYTES: Final = 64 * 1024  # every transfer has moved this much before the window opens
BIG: Final = 200 * RATE  # more than any transfer can move during the test
CHUNK: Final = 64 * 1024
SUB: Final = "bw.test"

pytestmark = pytest.mark.slow


class Meter:
    """Bytes seen by each transfer, read by the test while they run."""

    def __init__(self) -> None:
        self.nbytes: dict[str, int] = {}
        self.flowing: dict[str, asyncio.Event] = {}

    def add(self, name: str, n: int) -> None:
        total = self.nbytes[name] = self.nbytes.get(name, 0) + n
        if total >= WARMUP_BYTES:
            self.flowing.setdefault(name, asyncio.Event()).set()

    async def wait_flowing(self, names: list[str]) -> None:
        for name in names:
            await self.flowing.setdefault(name, asyncio.Event()).wait()

    def total(self) -> int:
        return sum(self.nbytes.values())


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A local service; the connections it accepted are aborted when it closes."""
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await handler(reader, writer)
        except ConnectionError:
            pass  # the test aborts its connections at the end
        finally:
            writer.transport.abort()
            writers.discard(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in list(writers):
            writer.transport.abort()
        server.close()
        await server.wait_closed()


def sink_handler(meter: Meter, name: str) -> Callable[..., Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(CHUNK):
            meter.add(name, len(chunk))

    return handle


async def http_source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers one GET with a body of BIG bytes, written as fast as the reader takes it."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
    for chunk in pattern_chunks(BIG):
        writer.write(chunk)
        await writer.drain()


async def download(meter: Meter, name: str, port: int, request: bytes = b"") -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if request:
            writer.write(request)
        while chunk := await reader.read(CHUNK):
            meter.add(name, len(chunk))
    finally:
        writer.transport.abort()


async def upload(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in pattern_chunks(BIG):
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.transport.abort()


async def measure(meter: Meter, seconds: float) -> float:
    """Bytes per second over all transfers during the next `seconds`."""
    start, before = time.monotonic(), meter.total()
    await asyncio.sleep(seconds)  # the measurement window itself, not a wait for an event
    return (meter.total() - before) / (time.monotonic() - start)


def assert_near(rate: float, expected: float) -> None:
    assert abs(rate - expected) <= TOLERANCE * expected, (
        f"{rate / expected:.3f} x the quota ({rate:.0f} B/s, expected {expected:.0f})"
    )


async def test_user_bandwidth_quota_caps_all_proxies_both_ways(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """alice's 1MB/s quota holds for the sum of a tcp download, a tcp upload and an http
    download through three proxies (+-10% over 10 s); each transfer gets a share; the client's
    ready line names the quota; `set-quota --bandwidth 0` lifts it on the open connections."""
    store = tmp_path / "users.db"
    token = await add_user(store, "alice")
    quota = await users_cli(store, "set-quota", "alice", "--bandwidth", "1MB")
    assert "bandwidth=1.0MB/s" in quota.stderr
    meter = Meter()
    extra = f'vhostHTTPPort = 0\nsubDomainHost = "{SUB}"\n'
    async with (
        asyncio.timeout(120),
        tcp_source_server(BIG) as source,
        serving(sink_handler(meter, "up")) as sink_port,
        serving(http_source) as web_port,
    ):
        server = await run_tunneld(users_server_toml(store, extra=extra))
        control = await server.control_address()
        http_port = int((await server.wait_for(r"http vhost on \S+:(\d+)"))[1])
        proxies = (
            tcp_proxy("down", source.port, 0)
            + tcp_proxy("up", sink_port, 0)
            + http_proxy("web", web_port, subdomain="web")
        )
        client = await run_tunnelc(
            user_client_toml(control.port, await server.fingerprint(), "alice", token, proxies)
        )
        down = await client.proxy_endpoint("down")
        up = await client.proxy_endpoint("up")
        await client.proxy_endpoint("web")
        await client.wait_for(r"proxy web ready at .*1\.0MB/s \(quota bandwidth\)")
        get = f"GET / HTTP/1.1\r\nHost: web.{SUB}\r\n\r\n".encode()
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(download(meter, "down", down.port)),
                group.create_task(upload(up.port)),
                group.create_task(download(meter, "web", http_port, get)),
            ]
            try:
                await meter.wait_flowing(["down", "up", "web"])
                shares_before = dict(meter.nbytes)
                rate = await measure(meter, WINDOW_S)
                shares = {k: meter.nbytes[k] - shares_before[k] for k in shares_before}
                assert_near(rate, RATE)
                for name, moved in shares.items():  # one bucket, shared: nobody starves
                    assert moved >= 0.05 * WINDOW_S * RATE, (name, shares)
                await users_cli(store, "set-quota", "alice", "--bandwidth", "0")
                lifted = await measure(meter, 3.0)
                assert lifted > 3 * RATE, f"{lifted:.0f} B/s after the quota was cleared"
            finally:
                for task in tasks:
                    task.cancel()


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.count += 1


async def test_user_bandwidth_quota_polices_udp_datagrams(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """Datagrams cannot wait: over the user's 64KB/s they are dropped and counted. A visitor
    sending 4x the quota to a udp echo for 4 s gets through, both ways together, about what
    the bucket pays for, and tunnelkit_udp_dropped_datagrams_total counts the rest."""
    from tests.support.curl import curl
    from tests.support.echo import udp_echo_server
    from tests.support.procs import DASHBOARD_READY

    rate, size, seconds = 64 * 1024, 1000, 4.0
    store = tmp_path / "users.db"
    token = await add_user(store, "alice")
    await users_cli(store, "set-quota", "alice", "--bandwidth", "64KB")
    extra = "webServer.port = 0\nenablePrometheus = true\n"
    proxy = '[[proxies]]\nname = "u"\ntype = "udp"\nlocalPort = {}\nremotePort = 0\n'
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(90), udp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store, extra=extra))
        control = await server.control_address()
        web = f"http://127.0.0.1:{(await server.wait_for(DASHBOARD_READY))['port']}"
        client = await run_tunnelc(
            user_client_toml(
                control.port, await server.fingerprint(), "alice", token, proxy.format(echo.port)
            )
        )
        public = await client.proxy_endpoint("u")
        transport, replies = await loop.create_datagram_endpoint(
            _Replies, remote_addr=("127.0.0.1", public.port)
        )
        try:
            sent, start = 0, time.monotonic()
            interval = size / (4 * rate)  # four times the quota
            while (elapsed := time.monotonic() - start) < seconds:
                transport.sendto(b"d" * size)
                sent += 1
                await asyncio.sleep(max(0.0, sent * interval - elapsed))
            elapsed = time.monotonic() - start
            await asyncio.sleep(0.5)  # datagrams still in flight settle (not a readiness wait)
        finally:
            transport.close()
        # Both directions are charged to one bucket: what reached the echo plus what came back.
        passed = (echo.received + replies.count) * size
        allowed = rate * elapsed + 16 * 1024 + size  # the rate, the burst, one datagram of debt
        assert 0.6 * allowed <= passed <= 1.1 * allowed, (passed, allowed, replies.count, sent)
        metrics = (await curl(f"{web}/metrics")).stdout.decode()
        line = next(
            ln
            for ln in metrics.splitlines()
            if ln.startswith('tunnelkit_udp_dropped_datagrams_total{proxy="alice.u"}')
        )
        assert float(line.split()[-1]) >= sent - echo.received - 2, (line, sent)


async def test_user_bandwidth_quota_holds_behind_a_new_user_conn_plugin(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """A tcp visitor held for the NewUserConn plugin is paced once admitted (the held bytes
    are charged too): a download still runs at the user's 1MB/s (+-10% over 5 s)."""
    from tests.e2e.test_server_plugins_e2e import plugin_server, plugins_toml

    store = tmp_path / "users.db"
    token = await add_user(store, "alice")
    await users_cli(store, "set-quota", "alice", "--bandwidth", "1MB")
    meter = Meter()
    async with (
        asyncio.timeout(90),
        tcp_source_server(BIG) as source,
        plugin_server(moved_to=1) as (plugin, plugin_port),
    ):
        server = await run_tunneld(users_server_toml(store, extra=plugins_toml(plugin_port)))
        control = await server.control_address()
        client = await run_tunnelc(
            user_client_toml(
                control.port,
                await server.fingerprint(),
                "alice",
                token,
                tcp_proxy("down", source.port, 0),
            )
        )
        down = await client.proxy_endpoint("down")
        async with asyncio.TaskGroup() as group:
            task = group.create_task(download(meter, "down", down.port))
            try:
                await meter.wait_flowing(["down"])
                assert_near(await measure(meter, 5.0), RATE)
            finally:
                task.cancel()
        assert await plugin.wait_op("NewUserConn", proxy_name="alice.down")
