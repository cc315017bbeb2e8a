"""transport.useCompression through the real tunneld/tunnelc: ratio and throughput cost.

    .venv/bin/python bench/compression_bench.py [--mib 256] [--runs 3]

One tunneld and one tunnelc with two tcp proxies to the same local sink: "plain" and
"zipped" (transport.useCompression = true). For each payload (JSON log lines, and random
bytes) and each proxy, uploads --mib MiB through the public port into the sink (which answers
with the byte count at EOF), best of --runs, and reads what crossed the tunnel from tunneld's
dashboard (`/api/proxies` bytes_in: the stream bytes, compressed when the proxy is).
Then, in this process, the codecs alone on the same payloads: tunnelkit's (zstd level 1 in
64 KiB flushed pieces, protocol/compression.py) beside the stdlib's zlib at level 1 with the
same pieces, the alternative it was chosen over.
Prints markdown tables. Traffic stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.compression import Deflater, Inflater  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402

MiB = 1 << 20
CHUNK = 256 * 1024
BUFFER = 16 * MiB  # the payload cycles through this much distinct data (> any window)
STEP_TIMEOUT_S = 300.0


def text_payload() -> bytes:
    """16 MiB of JSON log lines that vary like real ones (ids, paths, timings)."""
    rng = random.Random(7)
    lines = []
    size = 0
    while size < BUFFER:
        line = (
            json.dumps(
                {
                    "ts": f"2026-11-30T08:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
                    "level": rng.choice(["info", "info", "info", "warn", "error"]),
                    "path": f"/api/v1/items/{rng.randrange(100000)}",
                    "status": rng.choice([200, 200, 200, 304, 404, 500]),
                    "ms": rng.randrange(1, 900),
                    "user": rng.choice(["alice", "bob", "carol", "dave"]),
                }
            ).encode()
            + b"\n"
        )
        lines.append(line)
        size += len(line)
    return b"".join(lines)[:BUFFER]


async def sink_server() -> tuple[asyncio.Server, int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while chunk := await reader.read(CHUNK):
            total += len(chunk)
        writer.write(b"%d\n" % total)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def upload(port: int, payload: bytes, nbytes: int) -> float:
    """Send nbytes (cycling through payload) and wait for the sink's count; returns MB/s."""
    view = memoryview(payload)
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent = 0
        while sent < nbytes:
            start = sent % len(view)
            writer.write(view[start : start + CHUNK])
            await writer.drain()
            sent += CHUNK
        writer.write_eof()
        got = int((await reader.readline()).decode())
        assert got == sent, f"sink got {got} of {sent} bytes"
    finally:
        writer.close()
        await writer.wait_closed()
    return nbytes / (time.perf_counter() - started) / 1e6


def proxy_bytes(dashboard: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{dashboard}/api/proxies", timeout=10) as resp:
        rows = json.loads(resp.read())
    return {row["name"]: int(row["bytes_in"]) for row in rows}


def codec_rows(payloads: dict[str, bytes]) -> list[str]:
    """MB/s of compressing and inflating each payload in 64 KiB pieces: zstd vs zlib."""
    rows = []
    piece = 64 * 1024
    for label, payload in payloads.items():
        chunks = [payload[i : i + piece] for i in range(0, len(payload), piece)]
        deflater, inflater = Deflater(), Inflater()
        started = time.perf_counter()
        pieces = [p for c in chunks for p in deflater.compress(c)]
        middle = time.perf_counter()
        for p in pieces:
            inflater.inflate(p)
        ended = time.perf_counter()
        z, unz = zlib.compressobj(1, zlib.DEFLATED, -15), zlib.decompressobj(-15)
        zstarted = time.perf_counter()
        zpieces = [z.compress(c) + z.flush(zlib.Z_SYNC_FLUSH) for c in chunks]
        zmiddle = time.perf_counter()
        for p in zpieces:
            unz.decompress(p)
        zended = time.perf_counter()
        n = len(payload) / 1e6
        rows.append(
            f"| {label} | {n / (middle - started):.0f} / {n / (ended - middle):.0f} | "
            f"{len(payload) / sum(map(len, pieces)):.2f} | "
            f"{n / (zmiddle - zstarted):.0f} / {n / (zended - zmiddle):.0f} | "
            f"{len(payload) / sum(map(len, zpieces)):.2f} |"
        )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    nbytes = args.mib * MiB
    payloads = {"JSON log lines": text_payload(), "random bytes": random.randbytes(BUFFER)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sink, sink_port = await sink_server()
        group = ProcessGroup(work / "logs")
        try:
            (work / "frps.toml").write_text(
                f'bindAddr = "127.0.0.1"\nbindPort = 0\nstateDir = "{work}/server"\n'
                'webServer.addr = "127.0.0.1"\nwebServer.port = 0\n'
            )
            server = await group.start_tunnel("tunneld", ["-c", str(work / "frps.toml")])
            control = await server.control_address()
            dash = await server.dashboard_address()
            dashboard = f"http://127.0.0.1:{dash.port}"
            (work / "frpc.toml").write_text(
                f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                f'stateDir = "{work}/client"\n'
                f'transport.tls.serverFingerprint = "{await server.fingerprint()}"\n'
                f'[[proxies]]\nname = "plain"\ntype = "tcp"\nlocalPort = {sink_port}\n'
                f'[[proxies]]\nname = "zipped"\ntype = "tcp"\nlocalPort = {sink_port}\n'
                "transport.useCompression = true\n"
            )
            client = await group.start_tunnel("tunnelc", ["-c", str(work / "frpc.toml")])
            ports = {n: (await client.proxy_endpoint(n)).port for n in ("plain", "zipped")}
            rows = []
            for label, payload in payloads.items():
                result: dict[str, tuple[float, float]] = {}
                for name, port in ports.items():
                    best = 0.0
                    before = proxy_bytes(dashboard)[name]
                    for _ in range(args.runs):
                        async with asyncio.timeout(STEP_TIMEOUT_S):
                            best = max(best, await upload(port, payload, nbytes))
                    await asyncio.sleep(0.5)  # the counters of the last stream settle
                    wire = proxy_bytes(dashboard)[name] - before
                    result[name] = (best, args.runs * nbytes / wire)
                plain_mbs = result["plain"][0]
                zipped_mbs, ratio = result["zipped"]
                rows.append(
                    f"| {label} | {plain_mbs:.0f} | {zipped_mbs:.0f} | "
                    f"{zipped_mbs / plain_mbs:.2f} | {ratio:.2f} |"
                )
        finally:
            await group.aclose()
            sink.close()
            await sink.wait_closed()
    print(f"{args.mib} MiB per upload, best of {args.runs}, one stream, 127.0.0.1\n")
    print("| payload | plain MB/s | compressed MB/s | compressed/plain | ratio (plain/wire) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nThe codecs alone, one core, 16 MiB in 64 KiB pieces (compress / inflate MB/s):\n")
    print("| payload | zstd 1 MB/s | zstd ratio | zlib 1 MB/s | zlib ratio |")
    print("|---|---|---|---|---|")
    print("\n".join(codec_rows(payloads)))


if __name__ == "__main__":
    asyncio.run(main())
