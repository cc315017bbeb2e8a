"""Load generator and target servers for the benchmarks (blocking sockets, threads).

Started by a benchmark as a child process. It prints one JSON line with the ports of its
sink (reads everything, answers the byte count) and echo servers on 127.0.0.1, then runs
one JSON command per stdin line and prints one JSON result line:

    {"op": "stream", "port": P, "bytes": N, "streams": K}  -> {"mbps": ...}
    {"op": "connect", "port": P, "count": N}               -> {"per_s": ..., "p50_ms": ...}
    {"op": "udp_ping", "port": P, "count": N, "interval_ms": I}
                                                           -> {"p50_ms": ..., "p99_ms": ...}

It also runs a UDP echo server ("udp_echo" in the first line) that answers only small
datagrams (at most UDP_ECHO_MAX_BYTES: the pings) and drops the rest, so a flood sent to it
costs it little CPU while another flow's pings are timed.

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
UDP_ECHO_MAX_BYTES = 64  # larger datagrams (a flood) are read and dropped
UDP_PING_TIMEOUT_S = 1.0  # a ping not answered within this counts as lost


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


def serve_udp_echo() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    def loop() -> None:
        while True:
            data, addr = sock.recvfrom(65536)
            if len(data) <= UDP_ECHO_MAX_BYTES:
                sock.sendto(data, addr)

    threading.Thread(target=loop, daemon=True).start()
    port: int = sock.getsockname()[1]
    return port


def udp_ping(port: int, count: int, interval_ms: float) -> dict[str, Any]:
    """`count` sequential pings (one in flight), `interval_ms` apart: round-trip p50/p99."""
    latencies: list[float] = []
    lost = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.settimeout(UDP_PING_TIMEOUT_S)
        for seq in range(count):
            payload = b"ping %d" % seq
            t0 = time.perf_counter()
            sock.send(payload)
            deadline = t0 + UDP_PING_TIMEOUT_S
            while True:  # skip late answers to earlier pings
                try:
                    answer = sock.recv(256)
                except (TimeoutError, ConnectionRefusedError):
                    lost += 1
                    break
                if answer == payload:
                    latencies.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() > deadline:
                    lost += 1
                    break
            time.sleep(interval_ms / 1000)
    latencies.sort()
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "lost": lost}
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "lost": lost,
    }


def main() -> None:
    ports = {"sink": serve(sink), "echo": serve(echo), "udp_echo": serve_udp_echo()}
    print(json.dumps(ports), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "stream":
            result = stream(cmd["port"], cmd["bytes"], cmd["streams"])
        elif cmd["op"] == "udp_ping":
            result = udp_ping(cmd["port"], cmd["count"], cmd["interval_ms"])
        else:
            result = connect(cmd["port"], cmd["count"])
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
