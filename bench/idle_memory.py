"""Idle memory of the side-by-side tunnel (bench/sidebyside.py's `tunnel_path`), no load.

Starts tunneld and tunnelc with the same configs as `python -m bench.run_all` (an http proxy
with the inspector on by default, tcp and udp proxies), waits until every proxy is up, and
prints each process's RSS (VmRSS) and peak (VmHWM) in MiB, its thread count, and whether
aiohttp's C extension is mapped. With `--touch-web`, it then fetches the inspector once and
prints the same again. Medians over `--runs` fresh starts.

    .venv/bin/python -m bench.idle_memory --runs 5 [--touch-web]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import urllib.request
from pathlib import Path
from typing import Final

from bench.sidebyside import Targets, peak_rss_kib, rss_kib, tunnel_path
from tests.support.peers import reserve_port
from tests.support.procs import ProcessGroup

SETTLE_S: Final = 2.0  # let start-up work (history load, first status) finish
FETCH_TIMEOUT_S: Final = 30.0


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _aiohttp_mapped(pid: int) -> bool:
    return "aiohttp/" in Path(f"/proc/{pid}/maps").read_text()


def _sample(pids: dict[str, int]) -> dict[str, tuple[float, float, int, bool]]:
    return {
        name: (rss_kib(pid) / 1024, peak_rss_kib(pid) / 1024, _threads(pid), _aiohttp_mapped(pid))
        for name, pid in pids.items()
    }


async def _one(touch_web: bool) -> list[dict[str, tuple[float, float, int, bool]]]:
    targets = Targets(*(reserve_port(socket.SOCK_STREAM) for _ in range(4)))
    with tempfile.TemporaryDirectory() as tmp:
        group = ProcessGroup()
        try:
            path = await tunnel_path(group, Path(tmp), targets)
            await asyncio.sleep(SETTLE_S)
            samples = [_sample(path.pids)]
            if touch_web:
                url = f"http://127.0.0.1:{path.inspector}/"
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S).read()
                )
                assert body, "the inspector answered nothing"
                await asyncio.sleep(SETTLE_S)
                samples.append(_sample(path.pids))
            return samples
        finally:
            await group.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--touch-web", action="store_true")
    args = parser.parse_args()
    runs = [asyncio.run(_one(args.touch_web)) for _ in range(args.runs)]
    for phase, label in enumerate(["idle", "after one inspector GET"][: len(runs[0])]):
        for name in runs[0][phase]:
            rows = [run[phase][name] for run in runs]
            rss = statistics.median(r[0] for r in rows)
            hwm = statistics.median(r[1] for r in rows)
            print(
                f"{label:>24} {name:8} RSS {rss:5.1f} MiB  VmHWM {hwm:5.1f} MiB  "
                f"threads {rows[0][2]}  aiohttp mapped {rows[0][3]}  (runs: {len(rows)})"
            )


if __name__ == "__main__":
    main()
