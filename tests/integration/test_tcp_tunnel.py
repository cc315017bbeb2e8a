"""TCP proxies end to end, in process: a user connects to the server's public port, the client
dials its local service, and the bytes cross one TLS mux session."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import time
from typing import Final

from protocol.aio.connection import CONN_WRITE_HIGH_WATER_BYTES
from protocol.aio.stream import LOCAL_WRITE_HIGH_WATER_BYTES
from protocol.settings import MuxSettings
from tunnel_server.config import PortRange
from tunnel_server.server import TunnelServer

from .conftest import (
    CHUNK_BYTES,
    LOOPBACK,
    ClientRunner,
    ServerFactory,
    TCPService,
    buffered_bytes,
    echo_once,
    pattern_chunks,
    pattern_digest,
    port_of,
    read_digest,
    tcp_connect,
    tcp_proxy,
    unused_port,
)

TEST_TIMEOUT_S: Final = 10.0
BULK_TIMEOUT_S: Final = 40.0
BULK_BYTES: Final = 256 * 1024 * 1024
STALLED_OFFER_BYTES: Final = 256 * 1024 * 1024
PROBE_BYTES: Final = 96 * 1024 * 1024  # the second stream's transfer, timed twice
SLOWDOWN_FACTOR: Final = 4.0  # generous: the stalled stream should cost the other ~nothing
SAMPLE_INTERVAL_S: Final = 0.005
CONCURRENT_CONNECTIONS: Final = 100
PER_CONNECTION_BYTES: Final = 48 * 1024
DEAD_SERVICE_CLOSE_S: Final = 2.0


async def test_tcp_proxy_echo_round_trip(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """Bytes sent to the public port reach the local service and its reply comes back."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("echo", echo.port))
        status = client.proxy_status["echo"]
        assert status.public_urls[0].startswith(f"tcp://{LOOPBACK}:")
        assert await echo_once(port_of(status), b"hello tunnel") == b"hello tunnel"
        counters = server.stats.proxy("echo")
        assert counters.connections_total == 1
        assert counters.bytes_in == counters.bytes_out == len(b"hello tunnel")


async def test_tcp_proxy_bulk_transfer_intact_both_directions(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """256 MiB up and the same 256 MiB back arrive complete and in order (SHA-256 both ways)."""
    async with asyncio.timeout(BULK_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("echo", echo.port))
        async with tcp_connect(port_of(client.proxy_status["echo"])) as (reader, writer):

            async def upload() -> None:
                for chunk in pattern_chunks(BULK_BYTES):
                    writer.write(chunk)
                    await writer.drain()
                writer.write_eof()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(upload())
                received = tg.create_task(read_digest(reader))
        expected = (BULK_BYTES, pattern_digest(BULK_BYTES))
        assert echo.finished == [expected], "upload corrupted on the way to the service"
        assert received.result() == expected, "download corrupted on the way back"


async def test_tcp_proxy_half_close_passes_through(
    server: TunnelServer, clients: ClientRunner, reply_after_eof: TCPService
) -> None:
    """A user that shuts down writing still gets the reply; the service sees EOF first."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("rpc", reply_after_eof.port))
        payload = random.Random(1).randbytes(1024 * 1024)
        async with tcp_connect(port_of(client.proxy_status["rpc"])) as (reader, writer):
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            await reply_after_eof.eof_seen.wait()
            assert await reader.read() == b"got %d bytes" % len(payload)
        assert reply_after_eof.finished == [(len(payload), "")]


async def test_tcp_proxy_dead_local_service_closes_user_and_tunnel_survives(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """A refused local dial closes the user's connection within 2 s; other proxies still work."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        dead_port = unused_port()  # nothing listens there
        client = await clients.run(
            server, tcp_proxy("dead", dead_port), tcp_proxy("echo", echo.port)
        )
        started = time.monotonic()
        async with tcp_connect(port_of(client.proxy_status["dead"])) as (reader, writer):
            writer.write(b"anyone there?")
            async with asyncio.timeout(DEAD_SERVICE_CLOSE_S):
                try:
                    assert await reader.read() == b""
                except ConnectionResetError:
                    pass  # a reset is as good as a FIN here: the user is told at once
        assert time.monotonic() - started < DEAD_SERVICE_CLOSE_S
        assert server.stats.proxy("dead").connections_active == 0
        assert await echo_once(port_of(client.proxy_status["echo"]), b"still up") == b"still up"
        assert server.sessions[client.client_id].mux.closed is False


async def test_tcp_proxy_concurrent_connections_keep_their_data(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """100 connections at once each get back exactly their own bytes."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("echo", echo.port))
        port = port_of(client.proxy_status["echo"])
        payloads = [
            random.Random(i).randbytes(PER_CONNECTION_BYTES) for i in range(CONCURRENT_CONNECTIONS)
        ]
        async with asyncio.TaskGroup() as tg:
            replies = [tg.create_task(echo_once(port, p)) for p in payloads]
        for i, (reply, payload) in enumerate(zip(replies, payloads, strict=True)):
            assert reply.result() == payload, f"connection {i} got someone else's bytes"
        assert server.stats.proxy("echo").connections_total == CONCURRENT_CONNECTIONS


async def timed_download(port: int, nbytes: int) -> float:
    """Download `nbytes` from the source; check them; return the throughput in bytes/s."""
    started = time.monotonic()
    async with tcp_connect(port) as (reader, writer):
        writer.write(b"%d\n" % nbytes)
        received = await read_digest(reader)
    elapsed = time.monotonic() - started
    assert received == (nbytes, pattern_digest(nbytes))
    return nbytes / elapsed


async def test_tcp_proxy_stalled_reader_neither_slows_others_nor_grows_memory(
    server: TunnelServer, clients: ClientRunner, source: TCPService
) -> None:
    """A user reading none of 256 MiB neither slows another stream nor grows the mux buffers."""
    async with asyncio.timeout(BULK_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("src", source.port))
        port = port_of(client.proxy_status["src"])
        alone = await timed_download(port, PROBE_BYTES)

        source.write_paused.clear()  # set by the first download; now watch the stalled one
        async with tcp_connect(port) as (stalled_reader, stalled_writer):
            stalled_writer.write(b"%d\n" % STALLED_OFFER_BYTES)
            # The service stops writing once every buffer on the way is full: then it stalls.
            await source.write_paused.wait()
            assert len(source.transports) == 1
            peak = 0
            measured = asyncio.Event()

            async def sample() -> None:
                nonlocal peak
                while not measured.is_set():
                    held = buffered_bytes(client.session) + sum(
                        buffered_bytes(s.mux) for s in server.sessions.values()
                    )
                    peak = max(peak, held)
                    await asyncio.sleep(SAMPLE_INTERVAL_S)

            sampler = asyncio.create_task(sample())
            try:
                beside_stalled = await timed_download(port, PROBE_BYTES)
            finally:
                measured.set()
                await sampler
            # The stalled stream was only held back: it resumes and its bytes are intact.
            head = await stalled_reader.readexactly(8 * CHUNK_BYTES)
            assert hashlib.sha256(head).hexdigest() == pattern_digest(8 * CHUNK_BYTES)

        assert beside_stalled > alone / SLOWDOWN_FACTOR, (
            f"{beside_stalled / 1e6:.0f} MB/s beside a stalled stream, {alone / 1e6:.0f} alone"
        )
        # Per stream: the peer's window in flight plus the local socket's high-water mark (and a
        # read of slack); per connection: its transport's high-water mark, on both sides.
        settings = MuxSettings()
        per_stream = settings.stream_window_bytes + LOCAL_WRITE_HIGH_WATER_BYTES
        bound = 2 * (per_stream + 2 * settings.read_size_bytes) + 2 * CONN_WRITE_HIGH_WATER_BYTES
        assert peak < bound, f"mux buffers peaked at {peak} bytes (bound {bound})"
        assert peak < STALLED_OFFER_BYTES // 10


async def test_tcp_proxy_remote_port_zero_picks_a_port(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """remotePort = 0 gets a free port chosen by the server, which serves the proxy."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("echo", echo.port, remote_port=0))
        port = port_of(client.proxy_status["echo"])
        assert port not in (0, server.control_port)
        assert await echo_once(port, b"ping") == b"ping"


async def test_tcp_proxy_outside_allow_ports_refused(
    make_server: ServerFactory, clients: ClientRunner, echo: TCPService
) -> None:
    """A port outside allowPorts is refused as "not allowed"; one inside is served."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        allowed = unused_port()
        server = await make_server(allow_ports=(PortRange(allowed, allowed),))
        outside = allowed + 1 if allowed < 65535 else allowed - 1
        client = await clients.run(
            server,
            tcp_proxy("outside", echo.port, remote_port=outside),
            tcp_proxy("inside", echo.port, remote_port=allowed),
        )
        refused = client.proxy_status["outside"]
        assert refused.state == "refused"
        assert "not allowed" in refused.error
        assert port_of(client.proxy_status["inside"]) == allowed


async def test_tcp_proxy_port_in_use_refused(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """A remotePort another program listens on is refused as "in use"."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with socket.socket() as squatter:
            squatter.bind((LOOPBACK, 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            client = await clients.run(server, tcp_proxy("echo", echo.port, remote_port=taken))
        status = client.proxy_status["echo"]
        assert status.state == "refused"
        assert "in use" in status.error


async def test_tcp_proxy_port_held_by_another_client_refused(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """A remotePort another client's proxy holds is refused as held: the second one waits."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        first = await clients.run(server, tcp_proxy("one", echo.port))
        port = port_of(first.proxy_status["one"])
        second = await clients.run(server, tcp_proxy("two", echo.port, remote_port=port))
        assert second.proxy_status["two"].state == "waiting"
        error = second.proxy_status["two"].error
        assert "waiting for the stale session to expire" in error and "held by" in error
        assert await echo_once(port, b"first") == b"first"


async def test_tcp_proxy_name_taken_by_another_client_refused(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """Two clients asking for the same proxy name: the second waits for the first to go."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        first = await clients.run(server, tcp_proxy("web", echo.port))
        second = await clients.run(server, tcp_proxy("web", echo.port))
        assert first.client_id != second.client_id
        assert first.proxy_status["web"].state == "running"
        assert second.proxy_status["web"].state == "waiting"
        assert "held by another session" in second.proxy_status["web"].error
        assert server.proxy_owner("web") is server.sessions[first.client_id]
        assert await clients.stop(first) == 0
        await second.wait_status("web")  # retried with backoff until the name was free
        assert server.proxy_owner("web") is server.sessions[second.client_id]


async def test_tcp_proxy_max_ports_per_client_enforced(
    make_server: ServerFactory, clients: ClientRunner, echo: TCPService
) -> None:
    """With maxPortsPerClient = 2, a client's third port is refused; the first two serve."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(max_ports_per_client=2)
        names = ("a", "b", "c")
        client = await clients.run(server, *(tcp_proxy(n, echo.port) for n in names))
        states = [client.proxy_status[n].state for n in names]
        assert states == ["running", "running", "refused"]  # requests are served in order
        assert "maxPortsPerClient" in client.proxy_status["c"].error
        for name in ("a", "b"):
            assert (
                await echo_once(port_of(client.proxy_status[name]), name.encode()) == name.encode()
            )
        # Another client has its own allowance.
        other = await clients.run(server, tcp_proxy("d", echo.port))
        assert other.proxy_status["d"].state == "running"


async def test_tcp_client_trims_after_login_and_after_a_wave_of_streams(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """A client that trims its memory (tunnelc) does so once after its login, and once more
    after a wave of connections has passed, not while one is open; a client sharing its
    process (trim_memory off, the default here) never does."""
    async with asyncio.timeout(BULK_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("echo", echo.port), trim_memory=True)
        quiet_client = await clients.run(server, tcp_proxy("echo2", echo.port))
        assert quiet_client.trim_timer is None
        timer = client.trim_timer
        assert timer is not None
        assert timer.trims == 1  # after the login
        public = port_of(client.proxy_status["echo"])
        async with tcp_connect(public) as (reader, writer):
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            assert timer.pending  # the wave's trim waits: the connection is still open
            assert timer.trims == 1
        await timer.trimmed.wait()
        assert timer.trims == 2
        assert not timer.pending
