"""Load generator and target servers for the benchmarks (blocking sockets, threads).

Started by a benchmark as a child process. It prints one JSON line with the ports of its
sink (reads everything, answers the byte count) and echo servers on 127.0.0.1, then runs
one JSON command per stdin line and prints one JSON result line:

    {"op": "stream", "port": P, "bytes": N, "streams": K}  -> {"mbps": ...}
    {"op": "connect", "port": P, "count": N}               -> {"per_s": ..., "p50_ms": ...}

Every loop is bounded by the byte or connection count it was given, and every socket has a
timeout.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SOCKET_TIMEOUT_S = 60.0
CHUNK = 1 << 20


def serve(handler: Callable[[socket.socket], None]) -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)

    def accept_loop() -> None:
        while True:
            conn, _ = listener.accept()
            conn.settimeout(SOCKET_TIMEOUT_S)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    port: int = listener.getsockname()[1]
    return port


def sink(conn: socket.socket) -> None:
    buf = bytearray(CHUNK)
    total = 0
    with conn:
        while n := conn.recv_into(buf):
            total += n
        conn.sendall(str(total).encode())


def echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def stream(port: int, nbytes: int, streams: int) -> dict[str, Any]:
    data = os.urandom(CHUNK)
    received: list[int] = []

    def one() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as c:
            sent = 0
            while sent < nbytes:
                c.sendall(data)
                sent += len(data)
            c.shutdown(socket.SHUT_WR)
            received.append(int(c.recv(64)))

    start = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    expected = nbytes // CHUNK * CHUNK * streams
    if sum(received) != expected and nbytes % CHUNK == 0:
        raise RuntimeError(f"sink counted {sum(received)} bytes, expected {expected}")
    return {"mbps": sum(received) / elapsed / 1e6}


def connect(port: int, count: int) -> dict[str, Any]:
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as c:
            c.sendall(b"x")
            if c.recv(1) != b"x":
                raise RuntimeError("echo failed")
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "per_s": count / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def main() -> None:
    print(json.dumps({"sink": serve(sink), "echo": serve(echo)}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "stream":
            result = stream(cmd["port"], cmd["bytes"], cmd["streams"])
        else:
            result = connect(cmd["port"], cmd["count"])
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
