"""The client's local dial without a task (protocol/aio/localdial.py), on both loops tunnelkit
runs on: a connect splices and accepts, a refusal and the deadline reset the stream with
DIAL_FAILED and a one-line reason, and close() ends the dials in flight."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final

import pytest
import uvloop

from protocol.aio.connection import MuxSession
from protocol.aio.localdial import LocalDials
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode
from protocol.messages import StreamHeader
from protocol.settings import MuxSettings
from tests.support.echo import LOOPBACK, tcp_echo_server
from tests.support.peers import reserve_port

from .test_session_lifecycle import mux_pair

TEST_TIMEOUT_S: Final = 30.0
SHORT_DIAL_TIMEOUT_S: Final = 0.3  # against a listener that never answers a SYN
LONG_DIAL_TIMEOUT_S: Final = 60.0  # a dial that close() must end, not its deadline
HEADER: Final = StreamHeader("local", "127.0.0.1", 1)
LOOPS: Final[dict[str, Callable[[], asyncio.AbstractEventLoop]]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run_on(loop_name: str, test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(test(), TEST_TIMEOUT_S))


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops further SYNs, so a dial hangs."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection((LOOPBACK, port)):  # fills the queue of one
            yield port


def dial_each(
    server: MuxSession, port: int, timeout_s: float
) -> tuple[LocalDials, asyncio.Queue[tuple[MuxStream, bool]], asyncio.Event]:
    """The server side dials 127.0.0.1:port for each stream, as tunnelc's tcp proxy does."""
    dials = LocalDials(server.loop)
    ended: asyncio.Queue[tuple[MuxStream, bool]] = asyncio.Queue()
    started = asyncio.Event()  # set when the first dial starts

    def on_stream(stream: MuxStream) -> None:
        started.set()
        dials.start(
            stream,
            LOOPBACK,
            port,
            timeout_s,
            lambda: SpliceProtocol(stream),
            lambda s, ok: ended.put_nowait((s, ok)),
        )

    server.on_stream = on_stream
    return dials, ended, started


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_connects_and_splices(loop_name: str) -> None:
    """Dialed streams carry an echo both ways; each dial ends as connected and leaves the
    table empty."""

    async def scenario() -> None:
        async with tcp_echo_server() as echo, mux_pair(MuxSettings()) as (client, server):
            dials, ended, _ = dial_each(server, echo.port, LONG_DIAL_TIMEOUT_S)
            for i in range(20):
                stream = client.open_stream(HEADER)
                await stream.write(b"ping %d" % i)
                assert await stream.read(len(b"ping %d" % i)) == b"ping %d" % i
                _, connected = await ended.get()
                assert connected
                stream.abort()
            assert len(dials) == 0
            dials.close()

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_refused_resets_with_the_reason(loop_name: str) -> None:
    """A refused dial resets the opener's stream with DIAL_FAILED naming the address."""

    async def scenario() -> None:
        dead = reserve_port(socket.SOCK_STREAM)
        async with mux_pair(MuxSettings()) as (client, server):
            dials, ended, _ = dial_each(server, dead, LONG_DIAL_TIMEOUT_S)
            stream = client.open_stream(HEADER)
            await stream.wait_closed()
            assert stream.reset_code == ErrorCode.DIAL_FAILED
            # uvloop names the error ("connection refused"); asyncio names the call.
            assert stream.reset_reason in (
                f"connection refused to 127.0.0.1:{dead}",
                f"connect call failed ('127.0.0.1', {dead}) to 127.0.0.1:{dead}",
            )
            dialed, connected = await ended.get()
            assert not connected and dialed.reset_reason == stream.reset_reason
            assert len(dials) == 0
            dials.close()

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_deadline_resets_a_silent_service(loop_name: str) -> None:
    """Dials to a service that never answers end at the deadline with "no answer", several
    at once from one sweep; their half-made sockets are closed (no ResourceWarning)."""

    async def scenario() -> None:
        with silent_listener() as port:
            async with mux_pair(MuxSettings()) as (client, server):
                dials, ended, _ = dial_each(server, port, SHORT_DIAL_TIMEOUT_S)
                streams = [client.open_stream(HEADER) for _ in range(3)]
                for stream in streams:
                    await stream.wait_closed()
                    assert stream.reset_code == ErrorCode.DIAL_FAILED
                    assert stream.reset_reason == (
                        f"no answer from 127.0.0.1:{port} within {SHORT_DIAL_TIMEOUT_S:g}s"
                    )
                for _ in streams:
                    _, connected = await ended.get()
                    assert not connected
                assert len(dials) == 0
                dials.close()

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_local_dial_close_ends_dials_in_flight(loop_name: str) -> None:
    """close() ends a hanging dial at once: its stream is reset and nothing fires later."""

    async def scenario() -> None:
        with silent_listener() as port:
            async with mux_pair(MuxSettings()) as (client, server):
                dials, ended, started = dial_each(server, port, LONG_DIAL_TIMEOUT_S)
                stream = client.open_stream(HEADER)
                await started.wait()  # the SYN reaches the server side on a later read
                assert len(dials) == 1
                dials.close()
                assert len(dials) == 0
                await stream.wait_closed()
                assert stream.reset_code == ErrorCode.CANCELLED
                await asyncio.sleep(0.05)
                assert ended.empty()  # close() is not a dial's end: no callback

    run_on(loop_name, scenario)
