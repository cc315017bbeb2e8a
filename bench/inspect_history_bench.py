"""What the inspector's history and filters cost per captured request, isolated from the network.

    .venv/bin/python bench/inspect_history_bench.py [--rate 1000] [--seconds 5] [--rounds 5]

Drives the inspector's own pipeline in this one process, the way tunnelc runs it: the bytes of
a request and of its response (those of bench/inspect_cost_bench.py: tunneld's request with
its forwarding headers, nginx's 8-header response with a 68-byte body) are fed to an
`HTTPCapture` at a steady `--rate` of exchanges per second, in bursts every 10 ms. Variants:
- `memory`: the capture and the in-memory store only;
- `history`: plus the SQLite history writer;
- `full`: plus a live view filtered as in the cost bench (`method=GET&status=2xx&q=nginx`,
  the page's `_pump_events` writing to a sink that keeps nothing) and a filtered list
  query (summaries of the matching exchanges, as JSON) every 5 seconds.

After a warm-up run of each (first use: imports, the thread pool, SQLite's caches), the
variants take turns, `--rounds` times; reported is this process's CPU time (all threads,
`time.process_time`) per exchange, the median and range, and what history and filters add,
as a median of each round's difference. Without the network in between, this is far
steadier than the end-to-end bench on a shared machine, and shows the inspector's own parts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tunnel_client.inspect.app import _pump_events, exchange_summary  # noqa: E402
from tunnel_client.inspect.capture import HTTPCapture  # noqa: E402
from tunnel_client.inspect.filters import parse_filter  # noqa: E402
from tunnel_client.inspect.history import HistoryDB, HistoryWriter  # noqa: E402
from tunnel_client.inspect.store import CaptureStore  # noqa: E402

REQUEST: Final = (
    b"GET /index.html HTTP/1.1\r\nHost: full.example.test\r\nUser-Agent: wrk\r\n"
    b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: full.example.test\r\n"
    b"X-Forwarded-Proto: http\r\nX-Real-IP: 127.0.0.1\r\n\r\n"
)
BODY: Final = b"hello from nginx\n" * 4
RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 11:00:00 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 68\r\n"
    b"Last-Modified: Mon, 30 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6570b4c0-44"\r\nAccept-Ranges: bytes\r\n\r\n' + BODY
)
TICK_S: Final = 0.01  # exchanges are produced in bursts every 10 ms
CONNECTIONS: Final = 50  # as wrk -c50: each keep-alive connection has its own capture
LIVE_FILTER: Final = {"method": "GET", "status": "2xx", "q": "nginx"}
LIST_QUERY_INTERVAL_S: Final = 5.0
VARIANTS: Final = ("memory", "history", "full")


class NullSink:
    """Stands in for the live view's HTTP response: counts the bytes, keeps nothing."""

    def __init__(self) -> None:
        self.written = 0

    async def write(self, data: bytes) -> None:
        self.written += len(data)


async def drive(store: CaptureStore, rate: int, seconds: float, list_query: bool) -> int:
    """Capture `rate` exchanges a second over CONNECTIONS connections; returns how many."""
    captures = [HTTPCapture(store, "full") for _ in range(CONNECTIONS)]
    per_tick = max(1, int(rate * TICK_S))
    wanted = parse_filter(LIVE_FILTER)
    done = 0
    start = time.monotonic()
    deadline = start + seconds
    next_tick = start
    next_query = start + LIST_QUERY_INTERVAL_S
    while time.monotonic() < deadline:
        for _ in range(per_tick):
            capture = captures[done % CONNECTIONS]
            capture.feed_request(REQUEST)
            capture.feed_response(RESPONSE)
            done += 1
        if list_query and time.monotonic() >= next_query:
            next_query += LIST_QUERY_INTERVAL_S
            json.dumps([exchange_summary(e) for e in store.list() if wanted.matches(e)])
        next_tick += TICK_S
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    return done


async def run(variant: str, args: argparse.Namespace, work: Path) -> float:
    store = CaptureStore(max_requests=args.max_requests, max_body_bytes=64 * 1024)
    writer = None
    if variant in ("history", "full"):
        (work / "bench.sqlite3").unlink(missing_ok=True)
        writer = HistoryWriter(HistoryDB(work / "bench.sqlite3"), store, max_age=3600.0)
        writer.start()
    live = None
    subscription = None
    if variant == "full":
        subscription = store.subscribe()
        live = asyncio.create_task(
            _pump_events(
                subscription,
                NullSink(),  # type: ignore[arg-type]
                parse_filter(LIVE_FILTER),
                exchange_summary,
            )
        )
    before = time.process_time()
    count = await drive(store, args.rate, args.seconds, list_query=variant == "full")
    used = time.process_time() - before  # the steady state: not the closing flush
    if subscription is not None and live is not None:
        subscription.close()
        await live
    if writer is not None:
        writer.close()
        await writer.wait_closed()
    return used / count * 1e6


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="exchanges per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-requests", type=int, default=200)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="tunnelkit-historybench-") as tmp:
        warm = argparse.Namespace(**{**vars(args), "seconds": 1.0})
        for name in VARIANTS:  # first use: imports, the thread pool, SQLite's caches
            await run(name, warm, Path(tmp))
        for round_no in range(args.rounds):
            shift = round_no % len(VARIANTS)
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                results[name].append(await run(name, args, Path(tmp)))
    print(
        f"inspector pipeline at {args.rate} exchanges/s, {args.seconds:g} s x {args.rounds} "
        f"rounds, maxRequests {args.max_requests}: CPU us per exchange, median (min-max)"
    )
    for name in VARIANTS:
        print(f"  {name:8} {spread(results[name])}")
    memory = results["memory"]
    for name in ("history", "full"):
        added = [a - b for a, b in zip(results[name], memory, strict=True)]
        print(f"  {name} adds {spread(added)} us per exchange over memory (paired by round)")


if __name__ == "__main__":
    asyncio.run(main())
