"""Memory per idle stream and per idle mux session, by Python allocation (tracemalloc).

    .venv/bin/python bench/stream_memory_bench.py [--streams 5000] [--sessions 500]

Streams: one client and one server MuxSession over loopback TCP (no TLS); the client opens
`--streams` streams, the server accepts each (async style, nothing read or written), and the
bytes Python allocated for them, divided by streams and by the two sides, is the cost of one
idle stream on one side (MuxStream, StreamRecord, header, table entries). Sessions: the same
for `--sessions` idle session pairs (MuxSession, MuxConnection, read buffer, transport), per
side. TLS state and the apps' own per-session objects are not included: bench/memory_bench.py
measures a real tunneld's RSS for those.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.aio.connection import MuxSession  # noqa: E402
from protocol.aio.stream import MuxStream  # noqa: E402
from protocol.messages import StreamHeader  # noqa: E402
from protocol.mux import Role  # noqa: E402

LOOPBACK = "127.0.0.1"


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def streams_bench(count: int) -> float:
    loop = asyncio.get_running_loop()
    server_sessions: list[MuxSession] = []
    accepted: list[MuxStream] = []
    all_in = loop.create_future()

    def on_stream(stream: MuxStream) -> None:
        server_sessions[0].accept_stream(stream)
        accepted.append(stream)
        if len(accepted) == count and not all_in.done():
            all_in.set_result(None)

    def make() -> MuxSession:
        session = MuxSession(Role.SERVER)
        session.on_stream = on_stream
        server_sessions.append(session)
        return session

    listener = await loop.create_server(make, LOOPBACK, 0)
    _, client = await loop.create_connection(
        lambda: MuxSession(Role.CLIENT), LOOPBACK, listener.sockets[0].getsockname()[1]
    )
    try:
        await client.wait_connected()
        await asyncio.sleep(0.1)
        before = _traced()
        opened = [client.open_stream(StreamHeader("bench", "127.0.0.1", i)) for i in range(count)]
        await all_in
        await asyncio.sleep(0.2)  # the ACKs arrive; nothing else is pending
        per_side = (_traced() - before) / count / 2
        assert len(opened) == count
        return per_side
    finally:
        client.close()
        for session in server_sessions:
            session.close()
        listener.close()
        await listener.wait_closed()


async def sessions_bench(count: int) -> float:
    loop = asyncio.get_running_loop()
    server_sessions: list[MuxSession] = []
    all_in = asyncio.Event()

    def make() -> MuxSession:
        session = MuxSession(Role.SERVER)
        server_sessions.append(session)
        if len(server_sessions) == count:
            all_in.set()
        return session

    listener = await loop.create_server(make, LOOPBACK, 0)
    port = listener.sockets[0].getsockname()[1]
    clients: list[MuxSession] = []
    try:
        before = _traced()
        for _ in range(count):
            _, client = await loop.create_connection(
                lambda: MuxSession(Role.CLIENT), LOOPBACK, port
            )
            await client.wait_connected()
            clients.append(client)
        await all_in.wait()
        await asyncio.sleep(0.2)
        return (_traced() - before) / count / 2
    finally:
        for session in clients + server_sessions:
            session.close()
        listener.close()
        await listener.wait_closed()


async def main(streams: int, sessions: int) -> None:
    tracemalloc.start()
    per_stream = await streams_bench(streams)
    print(f"idle stream: {per_stream:.0f} bytes per side ({streams} streams, tracemalloc)")
    per_session = await sessions_bench(sessions)
    print(
        f"idle mux session: {per_session:.0f} bytes per side ({sessions} sessions, plain TCP, "
        "tracemalloc)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.streams, args.sessions))
