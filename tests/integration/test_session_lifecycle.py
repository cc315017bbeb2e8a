"""A client's control session over its life: login, refusal, retries, kick, replacement,
server shutdown and heartbeat, with the server and clients in process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Final

import pytest

from protocol import PROTOCOL_VERSION
from protocol.aio.connection import MuxSession
from protocol.aio.stream import StreamResetError
from protocol.errors import ErrorCode
from protocol.messages import StreamHeader
from protocol.mux import Role
from protocol.settings import MuxSettings
from tunnel_client.client import TunnelClient
from tunnel_common.configfile import Secret
from tunnel_server.server import TunnelServer

from .conftest import (
    LOOPBACK,
    ClientRunner,
    LogWatcher,
    ServerFactory,
    TCPService,
    echo_once,
    port_of,
    tcp_connect,
    tcp_proxy,
    unused_port,
    wait_until,
)

TEST_TIMEOUT_S: Final = 10.0
TOKEN: Final = "correct horse battery staple"
RECONNECT_TIMEOUT_S: Final = 5.0  # first backoff delay (0.5 s) plus a login, with room
DRAIN_S: Final = 0.5
SHUTDOWN_MARGIN_S: Final = 1.5
HEARTBEAT_TIMEOUT_S: Final = 0.6
ENDLESS_BYTES: Final = 1 << 40  # a download that outlives any test
USER_CLOSE_S: Final = 2.0  # how soon a user must see its connection end
WINDOW_THEN_RESET: Final = (
    "BUG: a peer's WINDOW_UPDATE and RST for one stream, read in one buffer while we hold a "
    "send backlog on it, kill the whole session. MuxConnection processes both frames (the RST "
    "forgets the stream), then MuxSession.transmit delivers SendWindowOpened first: "
    "MuxStream.window_opened -> _flush_backlog -> MuxSession.send_data -> MuxConnection."
    "send_data -> _require raises LocalProtocolError('unknown stream'), which escapes "
    "buffer_updated (protocol/aio/connection.py:113); asyncio calls it a fatal error and "
    "closes the transport. Fix: MuxSession.send_data returns 0 when the core no longer "
    "knows the stream (mux.terminated or mux.send_window(id) == 0); the queued StreamReset "
    "then finishes the MuxStream."
)

WRITE_SWALLOWS_RESET: Final = (
    "BUG: MuxStream.write()/drain() return normally when the stream is reset while they wait "
    "for window, although the unsent backlog was dropped. MuxStream._finish sets "
    "_tx_backlog = None before waking the writer, so the loop in drain() "
    "(protocol/aio/stream.py, drain()) exits on its condition without re-checking "
    "reset_code. Fix: after the loop (or when _finish dropped a backlog), raise "
    "StreamResetError if reset_code is set."
)


async def test_login_wrong_token_exits_with_code_1(
    make_server: ServerFactory, clients: ClientRunner
) -> None:
    """With loginFailExit (the default), a wrong token ends run() with 1; the server counts it."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(auth_token=Secret(TOKEN))
        config = clients.config(server, token="wrong", login_fail_exit=True)
        assert await TunnelClient(config).run() == 1
        await wait_until(lambda: server.stats.auth_failures == 1, "the failure counted")
        assert server.sessions == {}


async def test_login_protocol_version_mismatch_is_clear_on_both_sides(
    make_server: ServerFactory,
    clients: ClientRunner,
    logs: LogWatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client speaking another protocol version is refused; both sides say why."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server()
        monkeypatch.setattr("tunnel_client.client.PROTOCOL_VERSION", 99)
        config = clients.config(server, login_fail_exit=True)
        assert await TunnelClient(config).run() == 1
        await logs.wait_for(f"speaks protocol 99, this server speaks {PROTOCOL_VERSION}")
        await logs.wait_for("protocol version mismatch")
        assert server.sessions == {}


async def test_login_wrong_token_keeps_retrying_without_login_fail_exit(
    make_server: ServerFactory, clients: ClientRunner, logs: LogWatcher
) -> None:
    """With loginFailExit = false, a refused login is retried with backoff until stopped."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(auth_token=Secret(TOKEN))
        config = clients.config(server, token="wrong", login_fail_exit=False)
        client, task = clients.start(config)
        await logs.wait_for("login to", count=3)  # the first attempt and two retries
        assert not task.done()
        await wait_until(lambda: server.stats.auth_failures >= 3, "three failures counted")
        assert logs.count("could not prove that it knows the token") >= 3
        assert await clients.stop(client) == 0


async def test_login_right_token_accepted(
    make_server: ServerFactory, clients: ClientRunner, echo: TCPService
) -> None:
    """The right token logs in and the proxies are served."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(auth_token=Secret(TOKEN))
        client = await clients.run(server, tcp_proxy("echo", echo.port), token=TOKEN)
        assert await echo_once(port_of(client.proxy_status["echo"]), b"in") == b"in"
        assert server.stats.auth_failures == 0


async def test_session_kicked_client_reconnects_and_reclaims_its_port(
    server: TunnelServer, clients: ClientRunner, echo: TCPService, logs: LogWatcher
) -> None:
    """After a kick the client reconnects by itself and gets the same remote port back."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        port = unused_port()
        client = await clients.run(server, tcp_proxy("echo", echo.port, remote_port=port))
        assert port_of(client.proxy_status["echo"]) == port
        old_session = server.sessions[client.client_id]

        assert server.kick(client.client_id)
        await client.wait_status("echo", ("offline",))
        async with asyncio.timeout(RECONNECT_TIMEOUT_S):
            status = await client.wait_status("echo", ("running", "refused"))
        assert status.state == "running", status.error
        assert port_of(status) == port
        assert server.sessions[client.client_id] is not old_session
        assert old_session.mux.close_code == ErrorCode.KICKED
        assert logs.count("already in use") == 0
        assert await echo_once(port, b"back again") == b"back again"
        assert server.stats.sessions_total == 2


async def test_session_kick_closes_open_user_connections(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """A user connection open through a kicked session is closed, not left hanging."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("echo", echo.port))
        async with tcp_connect(port_of(client.proxy_status["echo"])) as (reader, writer):
            writer.write(b"before")
            assert await reader.readexactly(6) == b"before"
            assert server.kick(client.client_id)
            async with asyncio.timeout(USER_CLOSE_S):
                await _read_until_closed(reader)


async def test_session_same_client_id_replaces_old_session(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """A second login with the same client id replaces the first and takes over its port."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        port = unused_port()
        proxy = tcp_proxy("echo", echo.port, remote_port=port)
        first = await clients.run(server, proxy, client_id="laptop")
        first_session = server.sessions["laptop"]

        second = await clients.run(server, proxy, client_id="laptop")
        assert second.proxy_status["echo"].state == "running", second.proxy_status["echo"].error
        assert port_of(second.proxy_status["echo"]) == port
        assert server.sessions["laptop"] is not first_session
        assert first_session.mux.close_code == ErrorCode.SESSION_REPLACED
        # The replaced client notices; stop it before its backoff expires and it fights back.
        await first.wait_status("echo", ("offline",))
        assert await clients.stop(first) == 0
        assert await echo_once(port, b"replaced") == b"replaced"
        assert list(server.sessions) == ["laptop"]


async def _start_endless_download(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> asyncio.Task[int]:
    """Ask the source for more than any test reads; return once bytes flow, reading on."""
    writer.write(b"%d\n" % ENDLESS_BYTES)
    await reader.readexactly(1024 * 1024)
    return asyncio.create_task(_read_until_closed(reader))


async def test_server_shutdown_during_transfer_returns_within_drain_deadline(
    server: TunnelServer, clients: ClientRunner, source: TCPService
) -> None:
    """shutdown() with a download in flight returns by the drain deadline and ends sessions."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("src", source.port))
        async with tcp_connect(port_of(client.proxy_status["src"])) as (reader, writer):
            download = await _start_endless_download(reader, writer)
            started = time.monotonic()
            await server.shutdown(drain_timeout_s=DRAIN_S)
            elapsed = time.monotonic() - started
            download.cancel()
        assert DRAIN_S * 0.9 <= elapsed < DRAIN_S + SHUTDOWN_MARGIN_S, f"took {elapsed:.2f}s"
        assert server.sessions == {}
        await client.wait_status("src", ("offline",))
        async with asyncio.timeout(USER_CLOSE_S):
            await source.wait_all_closed()  # the client closed its side of the transfer


async def test_server_shutdown_during_transfer_closes_user_connection(
    server: TunnelServer, clients: ClientRunner, source: TCPService
) -> None:
    """The user's connection of a transfer cut by shutdown() ends soon after it returns."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("src", source.port))
        async with tcp_connect(port_of(client.proxy_status["src"])) as (reader, writer):
            download = await _start_endless_download(reader, writer)
            await server.shutdown(drain_timeout_s=DRAIN_S)
            try:
                async with asyncio.timeout(USER_CLOSE_S):
                    await download
            finally:
                download.cancel()


async def test_heartbeat_silent_client_session_ends_with_keepalive_timeout(
    make_server: ServerFactory, clients: ClientRunner, echo: TCPService
) -> None:
    """A client that stops answering is dropped after heartbeatTimeout; it then reconnects."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(heartbeat_timeout=HEARTBEAT_TIMEOUT_S)
        client = await clients.run(server, tcp_proxy("echo", echo.port))
        server_session = server.sessions[client.client_id]
        client_session = client.session
        assert client_session is not None and client_session.transport is not None

        # The client stops reading: it no longer answers the server's pings, and its own
        # pings are 30 s apart, so the server hears nothing from it.
        client_session.transport.pause_reading()
        started = time.monotonic()
        async with asyncio.timeout(HEARTBEAT_TIMEOUT_S * 3):
            await server_session.mux.wait_closed()
        assert server_session.mux.close_code == ErrorCode.KEEPALIVE_TIMEOUT
        assert time.monotonic() - started >= HEARTBEAT_TIMEOUT_S * 0.9

        client_session.transport.resume_reading()
        await client.wait_status("echo", ("offline",))
        async with asyncio.timeout(RECONNECT_TIMEOUT_S):
            status = await client.wait_status("echo", ("running",))
        assert await echo_once(port_of(status), b"alive") == b"alive"


@contextlib.asynccontextmanager
async def mux_pair(
    settings: MuxSettings, server_settings: MuxSettings | None = None
) -> AsyncIterator[tuple[MuxSession, MuxSession]]:
    """A client and a server MuxSession over loopback TCP (no TLS); the server accepts every
    stream. The server takes `server_settings` when they differ from the client's."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[MuxSession] = loop.create_future()

    def server_side() -> MuxSession:
        session = MuxSession(Role.SERVER, server_settings or settings)
        session.on_stream = session.accept_stream
        if not accepted.done():
            accepted.set_result(session)
        return session

    listener = await loop.create_server(server_side, LOOPBACK, 0)
    client: MuxSession | None = None
    try:
        _, client = await loop.create_connection(
            lambda: MuxSession(Role.CLIENT, settings),
            LOOPBACK,
            listener.sockets[0].getsockname()[1],
        )
        server = await accepted
        yield client, server
    finally:
        if client is not None:
            client.close()
        if accepted.done():
            accepted.result().close()
        listener.close()
        await listener.wait_closed()


async def test_mux_keepalive_deaf_side_times_out() -> None:
    """A MuxSession that stops reading ends with KEEPALIVE_TIMEOUT and tells its peer why."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        timeout_s = 0.4
        settings = MuxSettings(keepalive_interval_s=0.1, keepalive_timeout_s=timeout_s)
        async with mux_pair(settings) as (client, server):
            told: list[int] = []
            server.on_go_away = lambda code, reason: told.append(code)
            assert client.transport is not None
            client.transport.pause_reading()
            started = time.monotonic()
            await client.wait_closed()
            elapsed = time.monotonic() - started
            assert client.close_code == ErrorCode.KEEPALIVE_TIMEOUT
            assert timeout_s * 0.9 <= elapsed < timeout_s + 1.0
            async with asyncio.timeout(1.0):
                await server.wait_closed()  # GO_AWAY, then FIN
            assert told == [ErrorCode.KEEPALIVE_TIMEOUT]


async def test_mux_reset_right_after_window_update_ends_only_that_stream() -> None:
    """A WINDOW_UPDATE then RST on a backlogged stream ends that stream, not the session."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        window = 256 * 1024  # the initial window, so the peer's first credit is predictable
        async with mux_pair(MuxSettings(stream_window_bytes=window)) as (client, server):
            victim = client.open_stream(StreamHeader("victim", "", 0))
            bystander = client.open_stream(StreamHeader("bystander", "", 0))
            assert victim.send(bytes(4 * window)) is False  # three windows wait in a backlog
            await victim.wait_accepted()
            far_victim = next(s for s in server.streams() if s.header.proxy == "victim")

            consumed = 0
            while consumed < window // 2:  # half a window read: the peer owes us credit
                consumed += len(await far_victim.read())
            assert server.mux.pending_output_bytes > 0  # the WINDOW_UPDATE is queued...
            far_victim.abort(ErrorCode.CANCELLED, "user went away")  # ...and the RST after it

            async with asyncio.timeout(2.0):
                await victim.wait_closed()
            assert victim.reset_code == ErrorCode.CANCELLED, victim.reset_reason
            assert not client.closed, client.close_reason
            await bystander.write(b"still here")
            far_bystander = next(s for s in server.streams() if s.header.proxy == "bystander")
            assert await far_bystander.read() == b"still here"


async def test_mux_write_cut_short_by_reset_raises() -> None:
    """write() waiting for window raises StreamResetError when the peer resets the stream."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        window = 256 * 1024
        async with mux_pair(MuxSettings(stream_window_bytes=window)) as (client, server):
            stream = client.open_stream(StreamHeader("s", "", 0))
            writing = asyncio.create_task(stream.write(bytes(4 * window)))
            await stream.wait_accepted()  # by now write() has sent a window and waits
            far = server.streams()[0]
            far.abort(ErrorCode.CANCELLED, "user went away")
            async with asyncio.timeout(2.0):
                result = await asyncio.gather(writing, return_exceptions=True)
            assert stream.bytes_out < 4 * window
            assert isinstance(result[0], StreamResetError), (
                f"write() returned {result[0]!r} after sending {stream.bytes_out} of "
                f"{4 * window} bytes"
            )


async def _read_until_closed(reader: asyncio.StreamReader) -> int:
    """Read until EOF or reset (either ends the user's connection); return the bytes read."""
    nbytes = 0
    try:
        while chunk := await reader.read(256 * 1024):
            nbytes += len(chunk)
    except ConnectionResetError:
        pass  # a reset ends the connection as well as a FIN does
    return nbytes
