"""The adapter's pump: commands never drain events, and the core's output list is bounded."""

from __future__ import annotations

import asyncio
from typing import Final

from protocol.aio.connection import MAX_PENDING_OUTPUT_BYTES
from protocol.messages import CloseProxy, Message, StreamHeader
from protocol.settings import MuxSettings

from .conftest import wait_until
from .test_session_lifecycle import mux_pair

TEST_TIMEOUT_S: Final = 30.0
HEADER: Final = StreamHeader("pump", "127.0.0.1", 1)
BURST: Final = 40_000  # control messages sent without yielding: about 2.5 MiB of frames
REASON: Final = "x" * 40


async def test_pump_output_list_bounded_under_a_burst_of_commands() -> None:
    """Commands that queue far more than MAX_PENDING_OUTPUT_BYTES in one loop iteration never
    leave more than the bound (plus one frame) in the core; the peer gets every message."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with mux_pair(MuxSettings()) as (client, server):
            got: list[Message] = []
            done = asyncio.get_running_loop().create_future()

            def take(message: Message) -> bool:
                got.append(message)
                if len(got) == BURST and not done.done():
                    done.set_result(None)
                return True

            server.message_filter = take
            peak = 0
            for i in range(BURST):
                client.send_message(CloseProxy(f"p{i}", REASON))
                peak = max(peak, client.mux.pending_output_bytes)
            assert peak <= MAX_PENDING_OUTPUT_BYTES + 128  # one small frame past the bound
            await done
            assert [m.name for m in got if isinstance(m, CloseProxy)] == [
                f"p{i}" for i in range(BURST)
            ]


async def test_pump_end_stream_does_not_dispatch_synchronously() -> None:
    """A stream command never runs event delivery under it: the FIN that closes a stream
    whose peer already ended it is seen with the next transmit, not inside write_eof()."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with mux_pair(MuxSettings()) as (client, server):
            accepted = asyncio.get_running_loop().create_future()
            server.on_stream = lambda s: (server.accept_stream(s), accepted.set_result(s))
            stream = client.open_stream(HEADER)
            far = await accepted
            far.write_eof()
            assert await stream.read() == b""  # the peer's FIN arrived
            closed: list[int] = []
            stream.add_close_callback(lambda s: closed.append(s.stream_id))
            stream.write_eof()  # both directions are now done in the core
            assert not stream.is_closed  # ...but no event was delivered inside the command
            await stream.wait_closed()
            assert stream.reset_code is None
            await far.wait_closed()
            assert far.reset_code is None
            await asyncio.sleep(0)  # the close callback runs one iteration later
            assert closed == [stream.stream_id]
            assert client.stream_count() == 0


async def test_pump_stream_gauge_counts_unread_bytes() -> None:
    """A stream's public gauge shows the bytes received and not yet read, and the session's
    gauge includes them."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with mux_pair(MuxSettings()) as (client, server):
            accepted = asyncio.get_running_loop().create_future()
            server.on_stream = lambda s: (server.accept_stream(s), accepted.set_result(s))
            stream = client.open_stream(HEADER)
            far = await accepted
            await far.write(b"a" * 1000)
            far.write_eof()
            await wait_until(stream.at_eof, "the peer's data and FIN arrived")
            assert stream.buffered_bytes == 1000
            assert client.buffered_bytes() >= 1000
            assert await stream.read() == b"a" * 1000
            assert stream.buffered_bytes == 0


async def test_pump_abort_drops_the_connection_at_once() -> None:
    """abort() ends the session and closes the socket now (no goodbye exchange to wait for);
    a message queued just before it still reaches the peer, which then sees the session end."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with mux_pair(MuxSettings()) as (client, server):
            got: list[Message] = []
            server.message_filter = lambda m: got.append(m) is None
            client.send_message(CloseProxy("last", "words"))
            client.abort()
            assert client.closed
            assert client.transport is not None and client.transport.is_closing()
            await server.wait_closed()
            assert [m.name for m in got if isinstance(m, CloseProxy)] == ["last"]
            client.abort()  # idempotent
