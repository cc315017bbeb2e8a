"""Attacks on the client's local dial without a task (protocol/aio/localdial.py), on both
loops: a stream reset while its dial is in flight, and close() with dials in flight."""

from __future__ import annotations

import asyncio
import socket
from typing import Final

import pytest

from protocol.aio.connection import MuxSession
from protocol.aio.localdial import LocalDials
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode
from protocol.settings import MuxSettings
from tests.support.echo import LOOPBACK, tcp_echo_server

from .test_local_dial import HEADER, LONG_DIAL_TIMEOUT_S, LOOPS, run_on, silent_listener
from .test_local_dial import dial_each as dial_with_deadline
from .test_session_lifecycle import mux_pair

FD_REUSE_DIALS: Final = 8  # connections opened after close(), to take the freed descriptors


def dial_each(
    server: MuxSession, port: int
) -> tuple[LocalDials, asyncio.Queue[MuxStream], asyncio.Queue[tuple[MuxStream, bool]]]:
    """test_local_dial's `dial_each` with a long deadline, which also hands out each stream
    it is offered; returns the table, the offered streams and the dials' ends."""
    dials, ended, _ = dial_with_deadline(server, port, LONG_DIAL_TIMEOUT_S)
    offered: asyncio.Queue[MuxStream] = asyncio.Queue()
    dial = server.on_stream
    assert dial is not None

    def on_stream(stream: MuxStream) -> None:
        offered.put_nowait(stream)
        dial(stream)

    server.on_stream = on_stream
    return dials, offered, ended


@pytest.mark.parametrize("ending", ["visitor-reset", "session-closed"])
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_reset_while_dialing_resets_the_late_connection(
    loop_name: str, ending: str
) -> None:
    """A stream that ends while its dial hangs (the visitor resets it, or the session
    closes): when the service finally accepts, the late connection is reset (not spliced,
    not leaked) and the dial ends unconnected."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket() as listener:
            listener.bind((LOOPBACK, 0))
            listener.listen(0)
            listener.setblocking(False)
            port = listener.getsockname()[1]
            with socket.create_connection((LOOPBACK, port)):  # fills the queue of one
                async with mux_pair(MuxSettings()) as (client, server):
                    dials, offered, ended = dial_each(server, port)
                    stream = client.open_stream(HEADER)
                    dialing = await offered.get()
                    if ending == "visitor-reset":
                        stream.abort(ErrorCode.CANCELLED, "the visitor left")
                    else:
                        server.close()
                    await dialing.wait_closed()
                    filler, _ = await loop.sock_accept(listener)
                    filler.close()  # the queue has room: the dial's next SYN gets in
                    late, _ = await loop.sock_accept(listener)
                    with late:
                        with pytest.raises(ConnectionResetError):
                            assert await loop.sock_recv(late, 16) == b"", "closed, not reset"
                    dialed, connected = await ended.get()
                    assert dialed is dialing and not connected
                    assert len(dials) == 0
                    dials.close()

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_close_leaves_no_watch_on_a_closed_socket(loop_name: str) -> None:
    """close() with dials in flight: their sockets close and leave the loop, so new
    connections that get the same descriptors work, and no dial reports an end."""

    async def scenario() -> None:
        with silent_listener() as port:
            async with tcp_echo_server() as echo, mux_pair(MuxSettings()) as (client, server):
                dials, offered, ended = dial_each(server, port)
                streams = [client.open_stream(HEADER) for _ in range(3)]
                for _ in streams:
                    await offered.get()
                await asyncio.sleep(0)  # each dial's socket is made and waits on its SYN
                dials.close()
                assert len(dials) == 0
                for stream in streams:
                    await stream.wait_closed()
                    assert stream.reset_code == ErrorCode.CANCELLED
                for i in range(FD_REUSE_DIALS):
                    reader, writer = await asyncio.open_connection(LOOPBACK, echo.port)
                    try:
                        writer.write(b"ping %d" % i)
                        assert await reader.readexactly(len(b"ping %d" % i)) == b"ping %d" % i
                    finally:
                        writer.close()
                        await writer.wait_closed()
                assert ended.empty()  # close() is not a dial's end

    run_on(loop_name, scenario)


SERVER_MAX_STREAMS: Final = 64  # the dialing side's stream limit
OPENED_STREAMS: Final = 1000  # streams the opener asks for at once, far past that limit


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_table_bounded_by_max_streams(loop_name: str) -> None:
    """A thousand streams opened at once toward a service that never answers: the dialing
    side refuses those past its max_streams, so at most that many dials are in flight; close()
    ends them all and leaves nothing behind."""

    async def scenario() -> None:
        with silent_listener() as port:
            async with mux_pair(
                MuxSettings(max_streams=2 * OPENED_STREAMS),  # the opener: many streams
                MuxSettings(max_streams=SERVER_MAX_STREAMS),
            ) as (client, server):
                dials, offered, _ = dial_each(server, port)
                streams = [client.open_stream(HEADER) for _ in range(OPENED_STREAMS)]
                refused = streams[SERVER_MAX_STREAMS:]
                for stream in refused:
                    await stream.wait_closed()
                    assert stream.reset_code == ErrorCode.REFUSED
                assert offered.qsize() == SERVER_MAX_STREAMS
                assert len(dials) == SERVER_MAX_STREAMS
                dials.close()
                for stream in streams[:SERVER_MAX_STREAMS]:
                    await stream.wait_closed()
                    assert stream.reset_code == ErrorCode.CANCELLED
                assert server.stream_count() == 0

    run_on(loop_name, scenario)


RACE_ROUNDS: Final = 200  # dials whose deadline is about as long as the connect takes
RACE_DEADLINES_S: Final = (0.0, 0.0002, 0.0005, 0.001, 0.002)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_racing_its_deadline_ends_one_way_or_the_other(loop_name: str) -> None:
    """Dials to a service that answers at once, with deadlines about as long as the connect:
    each ends either connected (and its stream echoes) or reset with DIAL_FAILED, never both;
    every local connection a lost race made is closed, none is left open or leaked."""

    async def scenario() -> None:
        async with tcp_echo_server() as echo, mux_pair(MuxSettings()) as (client, server):
            dials = LocalDials(server.loop)
            ended: asyncio.Queue[tuple[MuxStream, bool]] = asyncio.Queue()
            deadline = iter(RACE_DEADLINES_S[i % len(RACE_DEADLINES_S)] for i in range(10**6))

            def on_stream(stream: MuxStream) -> None:
                dials.start(
                    stream,
                    LOOPBACK,
                    echo.port,
                    next(deadline),
                    lambda: SpliceProtocol(stream),
                    lambda s, ok: ended.put_nowait((s, ok)),
                )

            server.on_stream = on_stream
            outcomes = {True: 0, False: 0}
            for i in range(RACE_ROUNDS):
                stream = client.open_stream(HEADER)
                ping = b"ping %d" % i
                await stream.write(ping)
                dialed, connected = await ended.get()
                outcomes[connected] += 1
                if connected:
                    assert not dialed.is_closed
                    assert await stream.read(len(ping)) == ping
                    stream.abort()
                else:
                    await stream.wait_closed()
                    assert stream.reset_code == ErrorCode.DIAL_FAILED
                    assert dialed.reset_code == ErrorCode.DIAL_FAILED
            assert len(dials) == 0
            # Each local connection ends, reset or closed (the echo keeps no event for it).
            while echo.connections.open:  # noqa: ASYNC110 (bounded by the test timeout)
                await asyncio.sleep(0.01)
            dials.close()

    run_on(loop_name, scenario)
