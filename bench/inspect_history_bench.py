"""What the inspector's SQLite history costs per captured request, isolated from the network.

    .venv/bin/python bench/inspect_history_bench.py [--rate 2000] [--seconds 5]

Drives a `CaptureStore` the way the capture does (add on the request, update on the response)
at a steady `--rate` of exchanges per second for `--seconds`, once with memory only and once
with the history writer running, and reports this process's CPU time (all threads) per
exchange. The exchanges look like bench/http_bench.py's (8 headers each way, a 68-byte body).
The end-to-end bench shows the same effect through real processes, but on a shared machine
its req/s swing more than the effect measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange  # noqa: E402
from tunnel_client.inspect.history import HistoryDB, HistoryWriter  # noqa: E402
from tunnel_client.inspect.store import CaptureStore  # noqa: E402

HEADERS = tuple((f"X-Header-{i}", "v" * 24) for i in range(8))
TICK_S = 0.01  # exchanges are produced in bursts every 10 ms


async def drive(store: CaptureStore, rate: int, seconds: float) -> int:
    """Add and complete `rate` exchanges a second; returns how many."""
    per_tick = max(1, int(rate * TICK_S))
    done = 0
    deadline = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < deadline:
        for _ in range(per_tick):
            exchange = CapturedExchange(
                id=store.new_id(),
                proxy="web",
                started_at=time.time(),
                method="GET",
                path="/index.html",
                http_version="1.1",
                request_headers=HEADERS,
            )
            store.add(exchange)
            exchange.status, exchange.reason = 200, "OK"
            exchange.response_headers = HEADERS
            exchange.response_body = CapturedBody(b"hello from nginx\n" * 4, 68, False)
            exchange.duration_ms = 0.5
            store.update(exchange)
            done += 1
        next_tick += TICK_S
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    return done


async def run(history: bool, args: argparse.Namespace, work: Path) -> float:
    store = CaptureStore(max_requests=args.max_requests, max_body_bytes=64 * 1024)
    writer = None
    if history:
        writer = HistoryWriter(HistoryDB(work / "bench.sqlite3"), store, max_age=3600.0)
        writer.start()
    before = time.process_time()
    count = await drive(store, args.rate, args.seconds)
    if writer is not None:
        writer.close()
        await writer.wait_closed()
    return (time.process_time() - before) / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="exchanges per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunnelkit-historybench-") as tmp:
        memory = await run(False, args, Path(tmp))
        disk = await run(True, args, Path(tmp))
    print(
        f"store at {args.rate}/s for {args.seconds:g}s, maxRequests {args.max_requests}: "
        f"memory only {memory:.1f} us/exchange, with history {disk:.1f} us/exchange "
        f"(history adds {disk - memory:.1f} us per request)"
    )


if __name__ == "__main__":
    asyncio.run(main())
