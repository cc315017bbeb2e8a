"""Before login a peer gets a deadline and a small size cap, and nothing is allocated for it."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from protocol.frames import FrameDecoder, FrameType, encode_frame
from tunnel_server.server import TunnelServer

from .conftest import ServerFactory

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
