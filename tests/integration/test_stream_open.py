"""Opening a stream: the held ACK of a spliced accept, and the session's accept deadlines."""

from __future__ import annotations

import asyncio
from typing import Final, cast

import msgpack

from protocol.aio.connection import MuxSession
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode
from protocol.frames import Flag, FrameType
from protocol.messages import StreamHeader
from protocol.settings import MuxSettings
from tests.support.echo import LOOPBACK, tcp_echo_server, tcp_sink_server

from .conftest import wait_until
from .test_session_lifecycle import mux_pair

TEST_TIMEOUT_S: Final = 30.0
HEADER: Final = StreamHeader("open", "127.0.0.1", 1)


def splice_to(server: MuxSession, port: int) -> None:
    """The server side dials 127.0.0.1:port for each stream and splices (as tunnelc does)."""

    def on_stream(stream: MuxStream) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.create_connection(lambda: SpliceProtocol(stream), LOOPBACK, port)
        )
        task.add_done_callback(lambda t: t.exception())

    server.on_stream = on_stream


def record_writes(session: MuxSession) -> list[list[tuple[int, int, int]]]:
    """Each transport write of `session` as its frames' (type, flags, stream id)."""
    writes: list[list[tuple[int, int, int]]] = []
    transport = session.transport
    assert transport is not None
    write = transport.write

    def recording(data: bytes | bytearray | memoryview) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(bytes(data))
        writes.append([(f[0], f[1], f[2]) for f in unpacker])
        write(data)

    transport.write = recording  # type: ignore[method-assign]
    return writes


async def test_open_held_ack_rides_with_the_services_first_bytes() -> None:
    """A spliced accept holds its ACK: the one write that carries it carries the service's
    first bytes too (one record, one wake-up of the opener), and the echo comes back."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with tcp_echo_server() as echo, mux_pair(MuxSettings()) as (client, server):
            splice_to(server, echo.port)
            writes = record_writes(server)
            stream = client.open_stream(HEADER)
            await stream.write(b"ping")
            assert await stream.read(4) == b"ping"
            await stream.wait_accepted()
            sid = stream.stream_id
            (with_ack,) = [w for w in writes if (FrameType.WINDOW_UPDATE, Flag.ACK, sid) in w]
            assert (FrameType.DATA, Flag.NONE, sid) in with_ack
            assert server.mux.owed_acks == 0


async def test_open_held_ack_leaves_after_the_delay_for_a_silent_service() -> None:
    """A service that never writes still gets the stream accepted (ACK_DELAY_S later)."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with tcp_sink_server() as sink, mux_pair(MuxSettings()) as (client, server):
            splice_to(server, sink.port)
            stream = client.open_stream(HEADER)
            await stream.write(b"hello")
            await stream.wait_accepted()
            assert server.mux.owed_acks == 0
            assert not stream.is_closed


async def test_open_ack_not_held_when_the_opener_has_sent_nothing() -> None:
    """An opener that has sent nothing may be waiting for the ACK (tunneld's stcp owner
    stream does): its accept is not held, and a held one is only for an opener that spoke."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with tcp_echo_server() as echo, mux_pair(MuxSettings()) as (client, server):
            splice_to(server, echo.port)
            holds: list[bool] = []
            accept = server.mux.accept_stream

            def spy(stream_id: int, *, hold_ack: bool = False) -> None:
                holds.append(hold_ack)
                accept(stream_id, hold_ack=hold_ack)

            server.mux.accept_stream = spy  # type: ignore[method-assign]
            silent = client.open_stream(HEADER)
            await silent.wait_accepted()
            spoke = client.open_stream(HEADER)
            await spoke.write(b"hi")
            assert await spoke.read(2) == b"hi"
            assert holds == [False, True]


async def test_open_accept_deadline_sweep_expires_stuck_opens() -> None:
    """Streams the peer never accepts are reset with ACCEPT_TIMEOUT by the session's one sweep
    timer, with two timeouts mixed; the table is empty afterwards."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with mux_pair(MuxSettings()) as (client, server):
            server.on_stream = lambda stream: None  # takes streams, never accepts them
            streams = [client.open_stream(HEADER) for _ in range(5)]
            for i, stream in enumerate(streams):
                stream.set_accept_deadline(0.3 if i % 2 else 0.1)
            assert len(client.accept_deadlines) == 5
            for stream in streams:
                await stream.wait_closed()
                assert stream.reset_code == ErrorCode.ACCEPT_TIMEOUT
                assert "did not accept" in stream.reset_reason
            assert len(client.accept_deadlines) == 0


async def test_open_accept_deadline_left_when_accepted() -> None:
    """An accepted stream leaves the deadline table and is not reset when its time comes; one
    timer serves many streams (it is not re-armed per stream)."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with mux_pair(MuxSettings()) as (client, server):
            accepted: asyncio.Queue[MuxStream] = asyncio.Queue()
            server.on_stream = lambda s: (server.accept_stream(s), accepted.put_nowait(s))
            streams = [client.open_stream(HEADER) for _ in range(50)]
            streams[0].set_accept_deadline(0.2)
            timer = client.accept_deadlines._timer
            for stream in streams[1:]:
                stream.set_accept_deadline(0.2)
            assert client.accept_deadlines._timer is timer  # one timer for all fifty
            for stream in streams:
                await stream.wait_accepted()
            assert len(client.accept_deadlines) == 0
            deadlines = client.accept_deadlines
            await wait_until(lambda: deadlines._timer is None, "the sweep at the deadline")
            assert not any(stream.is_closed for stream in streams)
            assert accepted.qsize() == 50


async def test_open_close_callbacks_run_once_in_order_after_close() -> None:
    """Close callbacks run after the close (not inside it), in the order added, once each;
    one added after the close runs too."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with mux_pair(MuxSettings()) as (client, server):
            server.on_stream = lambda stream: None  # never accepts: the deadline resets it
            stream = client.open_stream(HEADER)
            calls: list[str] = []
            stream.add_close_callback(lambda s: calls.append(f"first {s.stream_id}"))
            stream.add_close_callback(lambda s: calls.append("second"))
            stream.abort(ErrorCode.CANCELLED, "done")
            assert calls == []  # soon after, never under the command
            done = asyncio.get_running_loop().create_future()
            stream.add_close_callback(lambda s: done.set_result(None))
            await done
            assert calls == [f"first {stream.stream_id}", "second"]
            stream.abort(ErrorCode.CANCELLED, "again")  # a second close runs nothing again
            await asyncio.sleep(0)
            assert len(calls) == 2


class _SpeaksThenHalfCloses(asyncio.Protocol):
    """A local service that sends b"hi" and ends its direction at once, then waits for ours."""

    def __init__(self, ended: asyncio.Future[str], opened: list[asyncio.Transport]) -> None:
        self.ended = ended
        self.opened = opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.opened.append(self.transport)
        self.transport.write(b"hi")
        self.transport.write_eof()

    def eof_received(self) -> bool:
        if not self.ended.done():
            self.ended.set_result("eof")
        self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(f"lost: {exc!r}")


class _CountingSplice(SpliceProtocol):
    """A splice that counts the write_eof calls on its socket."""

    write_eofs = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        write_eof = cast(asyncio.Transport, transport).write_eof

        def counting() -> None:
            _CountingSplice.write_eofs += 1
            write_eof()

        transport.write_eof = counting  # type: ignore[attr-defined]
        super().connection_made(transport)


async def test_close_both_ended_closes_the_socket_with_fin_and_no_shutdown() -> None:
    """A peer FIN after our direction has ended closes the local socket with FIN (a clean
    end, not a reset) and no shutdown() just before the close."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[str] = loop.create_future()
    opened: list[asyncio.Transport] = []
    service = await loop.create_server(lambda: _SpeaksThenHalfCloses(ended, opened), LOOPBACK, 0)
    port = service.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S), mux_pair(MuxSettings()) as (client, server):

            def on_stream(stream: MuxStream) -> None:
                task = loop.create_task(
                    loop.create_connection(lambda: _CountingSplice(stream), LOOPBACK, port)
                )
                task.add_done_callback(lambda t: t.exception())

            server.on_stream = on_stream
            _CountingSplice.write_eofs = 0
            stream = client.open_stream(HEADER)
            await stream.write(b"x")
            assert await stream.read(2) == b"hi"
            assert await stream.read(1) == b""  # the service's direction ended
            stream.write_eof()
            assert await ended == "eof"
            await stream.wait_closed()
            assert stream.reset_code is None
            assert _CountingSplice.write_eofs == 0
    finally:
        for transport in opened:  # asyncio.Server leaves accepted connections open
            transport.abort()
        service.close()
        await service.wait_closed()
