"""A mux session's RSS on the server side, with and without TLS, outside tunneld.

    .venv/bin/python bench/tls_session_memory_bench.py [--sessions 500]

Starts a server process that only accepts MuxSessions (uvloop, the server certificate and
TLS context tunneld uses, nothing else: no login, no proxy), logs in nothing, and opens
`--sessions` idle client sessions to it from this process: first over plain TCP, then over
TLS (a fresh server each time). The server's RSS growth per session, compared with tunneld's
(bench/memory_bench.py), splits an idle session's memory into the mux, TLS and the server's
own per-session objects.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.aio.connection import MuxSession  # noqa: E402
from protocol.mux import Role  # noqa: E402
from tests.support.memory import rss_kib  # noqa: E402

SERVER = r"""
import asyncio, socket, sys
from pathlib import Path
import uvloop
from protocol.aio.connection import MuxSession
from protocol.aio.tlslink import accept_tls
from protocol.mux import Role
from tunnel_common import allocator
from tunnel_server.certs import load_or_create_server_cert, server_ssl_context

async def main(state: str, mode: str) -> None:
    ctx = None
    if mode != "plain":
        ctx = server_ssl_context(load_or_create_server_cert(Path(state), None, None))
    sessions = []
    def make():
        s = MuxSession(Role.SERVER)
        sessions.append(s)
        return s
    loop = asyncio.get_running_loop()
    if mode == "tlslink":
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        async def accept_loop():
            while True:
                sock, _ = await loop.sock_accept(listener)
                loop.create_task(accept_tls(sock, ctx, make, timeout_s=5.0))
        task = loop.create_task(accept_loop())
        print(listener.getsockname()[1], flush=True)
    else:
        server = await loop.create_server(make, "127.0.0.1", 0, ssl=ctx)
        print(server.sockets[0].getsockname()[1], flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        allocator.trim()
        print(len(sessions), flush=True)

allocator.tune()
uvloop.run(main(sys.argv[1], sys.argv[2]))
"""


async def measure(sessions: int, mode: str, state: str) -> float:
    use_tls = mode != "plain"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER,
        state,
        mode,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    assert proc.stdin is not None and proc.stdout is not None
    clients: list[MuxSession] = []
    try:
        port = int(await proc.stdout.readline())
        ctx = None
        if use_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        loop = asyncio.get_running_loop()

        async def accepted() -> int:
            proc.stdin.write(b"?\n")  # type: ignore[union-attr]
            return int(await proc.stdout.readline())  # type: ignore[union-attr]

        for _ in range(20):  # warm-up: the first connections load code and fill caches
            _, c = await loop.create_connection(
                lambda: MuxSession(Role.CLIENT), "127.0.0.1", port, ssl=ctx
            )
            await c.wait_connected()
            clients.append(c)
        await accepted()
        base = rss_kib(proc.pid)
        for _ in range(sessions):
            _, c = await loop.create_connection(
                lambda: MuxSession(Role.CLIENT), "127.0.0.1", port, ssl=ctx
            )
            await c.wait_connected()
            clients.append(c)
        for _ in range(200):  # bounded: the server has seen every connection within 10 s
            if await accepted() >= sessions + 20:
                break
            await asyncio.sleep(0.05)  # polling another process's count
        await asyncio.sleep(1.0)  # idle: nothing else happens (the keepalive is 30 s away)
        await accepted()
        return (rss_kib(proc.pid) - base) / sessions
    finally:
        for c in clients:
            c.abort()
        proc.stdin.close()
        await proc.wait()


MODES = {
    "plain": "plain TCP          ",
    "uvloop": "TLS, uvloop SSL    ",
    "tlslink": "TLS, TLSLink       ",
}


async def main(sessions: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        for mode, what in MODES.items():
            kib = await measure(sessions, mode, state)
            print(f"server RSS per idle mux session, {what}: {kib:.1f} KiB ({sessions} sessions)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.sessions))
