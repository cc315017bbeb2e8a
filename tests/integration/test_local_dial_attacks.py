"""Attacks on the client's local dial without a task (protocol/aio/localdial.py), on both
loops: a stream reset while its dial is in flight, and close() with dials in flight."""

from __future__ import annotations

import asyncio
import socket

import pytest

from protocol.aio.connection import MuxSession
from protocol.aio.localdial import LocalDials
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode
from protocol.settings import MuxSettings
from tests.support.echo import LOOPBACK

from .test_local_dial import HEADER, LONG_DIAL_TIMEOUT_S, LOOPS, run_on
from .test_session_lifecycle import mux_pair


def dial_each(
    server: MuxSession, port: int
) -> tuple[LocalDials, asyncio.Queue[MuxStream], asyncio.Queue[tuple[MuxStream, bool]]]:
    """The server side dials 127.0.0.1:port for each stream it is offered (as tunnelc's tcp
    proxy does); returns the table, the offered streams and the dials' ends."""
    dials = LocalDials(server.loop)
    offered: asyncio.Queue[MuxStream] = asyncio.Queue()
    ended: asyncio.Queue[tuple[MuxStream, bool]] = asyncio.Queue()

    def on_stream(stream: MuxStream) -> None:
        offered.put_nowait(stream)
        dials.start(
            stream,
            LOOPBACK,
            port,
            LONG_DIAL_TIMEOUT_S,
            lambda: SpliceProtocol(stream),
            lambda s, ok: ended.put_nowait((s, ok)),
        )

    server.on_stream = on_stream
    return dials, offered, ended


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_reset_while_dialing_resets_the_late_connection(loop_name: str) -> None:
    """A stream the visitor resets while its dial hangs: when the service finally accepts,
    the late connection is reset (not spliced, not leaked) and the dial ends unconnected."""

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
                    stream.abort(ErrorCode.CANCELLED, "the visitor left")
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
