"""Python calls per connection and per request on the stream path: a count, not a time.

On a 2-core machine shared with other jobs, times per request move by 2x from run to run;
the number of Python calls the loop makes per operation does not. Both ends of one mux
session run in this process's loop (plain TCP on 127.0.0.1, uvloop), the way tunneld and
tunnelc run them: a public listener whose connections open streams (SpliceProtocol), and a
client end that dials an echo service for each stream (LocalDials, as tunnelc's tcp proxy).
The visitor and the echo service are blocking threads, which cProfile (enabled for the
loop's thread) leaves out.

    python -m bench.stream_calls_bench     # from the root of the checkout to measure

Every loop is bounded by its count, every socket by SOCKET_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

import uvloop

from protocol.aio.connection import MuxSession
from protocol.aio.localdial import LocalDials
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.messages import StreamHeader
from protocol.mux import Role

SOCKET_TIMEOUT_S: Final = 30.0
CONNECTIONS: Final = 300
REQUESTS: Final = 2000
WARM_UP: Final = 20
REQUEST: Final = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"


def echo_service() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept_loop() -> None:
        while True:
            conn, _ = listener.accept()
            conn.settimeout(SOCKET_TIMEOUT_S)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    port: int = listener.getsockname()[1]
    return port


def connections(port: int, count: int) -> None:
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as conn:
            conn.sendall(b"x")
            if conn.recv(1) != b"x":
                raise RuntimeError("echo failed")


def requests(port: int, count: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as conn:
        for _ in range(count):
            conn.sendall(REQUEST)
            got = b""
            while len(got) < len(REQUEST):
                got += conn.recv(len(REQUEST) - len(got))


async def main() -> None:
    loop = asyncio.get_running_loop()
    echo_port = echo_service()
    server_end: list[MuxSession] = []
    connected = asyncio.Event()

    def server_session() -> MuxSession:
        server_end.append(MuxSession(Role.SERVER))
        connected.set()
        return server_end[-1]

    control = await loop.create_server(server_session, "127.0.0.1", 0)
    client = MuxSession(Role.CLIENT)
    await loop.create_connection(lambda: client, "127.0.0.1", control.sockets[0].getsockname()[1])
    dials = LocalDials(loop)

    def on_stream(stream: MuxStream) -> None:
        dials.start(
            stream, "127.0.0.1", echo_port, 10.0, lambda: SpliceProtocol(stream), lambda s, ok: None
        )

    client.on_stream = on_stream
    async with asyncio.timeout(SOCKET_TIMEOUT_S):
        await connected.wait()
    session = server_end[0]

    def on_connect(proto: SpliceProtocol, transport: asyncio.Transport) -> MuxStream:
        peer = transport.get_extra_info("peername")
        return session.open_stream(StreamHeader("echo", peer[0], peer[1]))

    public = await loop.create_server(lambda: SpliceProtocol(on_connect=on_connect), "127.0.0.1", 0)
    port = public.sockets[0].getsockname()[1]
    cases: tuple[tuple[str, Callable[[int, int], None], int], ...] = (
        ("one connection (connect, 1 byte echoed, close)", connections, CONNECTIONS),
        ("one request + response on an open connection", requests, REQUESTS),
    )
    try:
        for name, work, count in cases:
            await asyncio.to_thread(work, port, WARM_UP)
            profile = cProfile.Profile()
            profile.enable()
            await asyncio.to_thread(work, port, count)
            async with asyncio.timeout(SOCKET_TIMEOUT_S):  # every stream closed at both ends
                await session.wait_idle()
                await client.wait_idle()
            profile.disable()
            stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
            calls = sum(
                row[1] for key, row in stats.items() if "to_thread" not in key[2]
            )  # fmt: skip
            print(f"{name}: {calls / count:.0f} Python calls in the loop (both ends)")
    finally:
        dials.close()
        public.close()
        control.close()
        client.close()
        session.close()


if __name__ == "__main__":
    uvloop.run(main())
