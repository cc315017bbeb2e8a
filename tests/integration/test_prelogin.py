"""Before login a peer gets a deadline and a small size cap, and nothing is allocated for it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import pytest

from protocol.frames import FrameDecoder, FrameType, encode_frame
from tunnel_server.server import TunnelServer

from .conftest import ClientRunner, LogWatcher, ServerFactory, wait_until

TEST_TIMEOUT_S = 15.0


async def raw_tls(server: TunnelServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection("127.0.0.1", server.control_port, ssl=ctx)


async def read_until_closed(reader: asyncio.StreamReader) -> list[object]:
    """Every frame the server sends until it closes the connection."""
    decoder = FrameDecoder(1 << 16, 1 << 16, 1 << 16)
    frames: list[object] = []
    while data := await reader.read(65536):
        decoder.feed(data)
        frames.extend(decoder.frames())
    return frames


async def test_prelogin_oversize_frame_ends_the_connection(server: TunnelServer) -> None:
    """A 10 KB message before login is refused: GO_AWAY, then the connection closes."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        reader, writer = await raw_tls(server)
        writer.write(encode_frame(FrameType.MESSAGE, 0, 0, {"t": "login", "pad": "x" * 10_000}))
        frames = await read_until_closed(reader)
        writer.close()
        go_away = [f for f in frames if f.type is FrameType.GO_AWAY]  # type: ignore[attr-defined]
        assert go_away, frames
        assert "4096" in go_away[0].payload[1]  # the pre-login size cap  # type: ignore[attr-defined]
        assert server.sessions == {}


async def test_prelogin_flood_of_messages_ends_the_connection(server: TunnelServer) -> None:
    """Many messages before login are not queued: the connection is closed."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        reader, writer = await raw_tls(server)
        frame = encode_frame(
            FrameType.MESSAGE, 0, 0, {"t": "close_proxy", "name": "x", "reason": ""}
        )
        writer.write(frame * 500)
        frames = await read_until_closed(reader)
        writer.close()
        assert FrameType.GO_AWAY in [f.type for f in frames]  # type: ignore[attr-defined]
        assert server.sessions == {}


async def test_prelogin_silent_peer_is_closed_after_the_deadline(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that never logs in is closed at the login deadline."""
    monkeypatch.setattr("tunnel_server.session.LOGIN_TIMEOUT_S", 0.3)
    server = await make_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        loop = asyncio.get_running_loop()
        reader, writer = await raw_tls(server)
        started = loop.time()
        await read_until_closed(reader)
        writer.close()
        assert loop.time() - started < 5.0
        assert server.sessions == {}


async def send_until_closed(port: int, chunks: list[bytes], pause_s: float) -> int:
    """Send `chunks` (pausing between them) until the server ends the connection; return the
    bytes it took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if reader.at_eof():
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause_s):
                    if not await reader.read(65536):
                        break  # EOF: the server closed it
    except ConnectionError:
        pass  # reset by the server: what we are testing for
    finally:
        writer.transport.abort()
    return sent


async def test_prelogin_oversized_client_hello_is_refused_at_once(server: TunnelServer) -> None:
    """A ClientHello announcing 16 MiB is refused after its first record, and its slot freed."""
    header = bytes([0x16, 0x03, 0x01, 0x40, 0x00])  # handshake record, 16 KiB
    first = header + bytes([0x01, 0xFF, 0xFF, 0xFF]) + bytes(16380)
    rest = [header + bytes(16384)] * 64  # 1 MiB more, never needed
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sent = await send_until_closed(server.control_port, [first, *rest], 0.05)
        assert sent < 256 * 1024
        await wait_until(lambda: len(server.pending) == 0, "the slot freed")


async def test_prelogin_dripping_client_hello_hits_the_handshake_deadline(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ClientHello sent a byte at a time is cut off at the TLS deadline; the slot is freed."""
    monkeypatch.setattr("tunnel_server.accept.TLS_HANDSHAKE_TIMEOUT_S", 0.5)
    server = await make_server()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        started = loop.time()
        hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC]) + bytes(503)
        await send_until_closed(server.control_port, [bytes([b]) for b in hello], 0.05)
        assert loop.time() - started < 5.0
        await wait_until(lambda: len(server.pending) == 0, "the slot freed")
        assert server.stats.limits.tls_failures >= 1


async def test_prelogin_full_table_answers_busy_and_the_client_retries(
    make_server: ServerFactory,
    clients: ClientRunner,
    logs: LogWatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one pending slot held by a fresh idle socket and no room to park, a client is told
    "busy, retry after N ms" (not closed silently), retries although loginFailExit = true,
    and gets in once the idle socket has stalled long enough to evict."""
    monkeypatch.setattr("tunnel_server.accept.MAX_PARKED", 0)
    server = await make_server(max_pending_logins=2, max_pending_logins_per_ip=1)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        _, idle = await asyncio.open_connection("127.0.0.1", server.control_port)
        await wait_until(lambda: len(server.pending) == 1, "the idle socket pending")
        _, task = clients.start(clients.config(server, login_fail_exit=True))
        await logs.wait_for("deferred: the server is busy with other logins")
        await logs.wait_for("logged in to")
        assert not task.done()
        assert server.stats.limits.busy_answers >= 1
        assert server.stats.limits.pending_evicted >= 1
        idle.transport.abort()
