"""TLS transport throughput: uvloop's SSL protocol beside TLSLink, in one run.

    .venv/bin/python bench/tls_transport_bench.py [--mib 512] [--runs 3]

A server process (uvloop, tunneld's certificate and TLS context) accepts one connection with
either uvloop's SSL protocol (`connect_accepted_socket(ssl=...)`) or TLSLink
(protocol/aio/tlslink.py), and either sinks `--mib` MiB sent by the client ("server reads":
the decrypt path) or sends them ("server writes": the encrypt path). The client is a
separate uvloop process with uvloop's SSL protocol in every case, so only the server's
transport differs. Prints MB/s, the median of `--runs` (the two transports' runs
interleaved), for each of the four cases.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import asyncio, socket, sys
from pathlib import Path
import uvloop
from protocol.aio.tlslink import accept_tls
from tunnel_server.certs import load_or_create_server_cert, server_ssl_context

CHUNK = bytes(range(256)) * 1024  # 256 KiB

class Sink(asyncio.BufferedProtocol):
    def __init__(self, total, done):
        self.left, self.done, self.buf = total, done, memoryview(bytearray(256 * 1024))
    def get_buffer(self, n):
        return self.buf
    def buffer_updated(self, n):
        self.left -= n
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)
    def eof_received(self):
        return False

class Source(asyncio.Protocol):
    def __init__(self, total, done):
        self.left, self.done, self.transport = total, done, None
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(4 << 20, 1 << 20)
        asyncio.get_running_loop().call_soon(self.resume_writing)
    def pause_writing(self):
        self.paused = True
    def resume_writing(self):
        self.paused = False
        while not self.paused and self.left > 0:
            self.transport.write(CHUNK)
            self.left -= len(CHUNK)
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)

async def main(state, engine, direction, total):
    ctx = server_ssl_context(load_or_create_server_cert(Path(state), None, None))
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    sock, _ = await loop.sock_accept(listener)
    done = loop.create_future()
    factory = (lambda: Sink(total, done)) if direction == "read" else (lambda: Source(total, done))
    if engine == "tlslink":
        transport, _ = await accept_tls(sock, ctx, factory, timeout_s=10)
    else:
        transport, _ = await loop.connect_accepted_socket(factory, sock, ssl=ctx)
    await done
    if direction == "read":
        transport.write(b"k")  # tell the client everything arrived
    await asyncio.sleep(0.5)
    transport.close()

uvloop.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""

CLIENT_CHUNK = bytes(range(256)) * 1024  # 256 KiB


async def one_run(state: str, engine: str, direction: str, total: int) -> float:
    import ssl

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, state, engine, direction, str(total),
        stdout=asyncio.subprocess.PIPE, cwd=str(ROOT),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        port = int(await proc.stdout.readline())
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        start = time.perf_counter()
        if direction == "read":
            left = total
            while left > 0:
                writer.write(CLIENT_CHUNK)
                left -= len(CLIENT_CHUNK)
                await writer.drain()
            await reader.readexactly(1)
        else:
            left = total
            while left > 0:
                data = await reader.read(1 << 20)
                if not data:
                    raise RuntimeError("the server closed early")
                left -= len(data)
        elapsed = time.perf_counter() - start
        writer.transport.abort()
        return total / elapsed / 1e6
    finally:
        async with asyncio.timeout(30):
            await proc.wait()


async def main(mib: int, runs: int) -> None:
    total = mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as state:
        for direction, what in (("read", "server reads (decrypts)"), ("write", "server writes")):
            rates: dict[str, list[float]] = {"uvloop": [], "tlslink": []}
            for _ in range(runs):  # interleaved, so both see the same machine load
                for engine, got in rates.items():
                    got.append(await one_run(state, engine, direction, total))
            for engine, got in rates.items():
                print(
                    f"{what:24s} {engine:8s} median {statistics.median(got):7.1f} MB/s  "
                    f"(runs: {', '.join(f'{r:.0f}' for r in got)})"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.mib, args.runs))
