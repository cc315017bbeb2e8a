"""Session memory: tunneld's RSS per idle session, after sessions leave, and per reconnect.

    .venv/bin/python bench/memory_bench.py [--sessions 1000] [--reconnects 10000]

Starts a real tunneld on 127.0.0.1 and, in this process, `--sessions` TunnelClients logged
in at once (one TCP proxy each), then lets them all leave; then `--reconnects` sequential
sessions (log in, register, leave). Prints tunneld's RSS at each step and this process's
growth over the reconnects (the client classes' own cost per reconnect).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.memory import Fleet, client_config, reconnect_storm, rss_kib  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402
from tunnel_common import allocator  # noqa: E402

TOKEN = "memory-bench"
WARMUP_ROUNDS = 50


async def main(sessions: int, reconnects: int, server_args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        group = ProcessGroup()
        try:
            server = await group.start_tunnel(
                "tunneld",
                ["-c", str(_server_config(work, sessions)), *server_args],
                env={"HOME": tmp, **_malloc_env()},
            )
            control = await server.control_address()
            fingerprint = await server.fingerprint()
            configs = [
                client_config(control.port, fingerprint, TOKEN, work / "state", 9, i)
                for i in range(max(sessions, 1))
            ]
            await reconnect_storm(configs, WARMUP_ROUNDS)
            base = rss_kib(server.pid)
            print(f"tunneld baseline after {WARMUP_ROUNDS} warm-up sessions: {base} KiB")
            fleet = Fleet()
            await fleet.start(configs[:sessions])
            full = rss_kib(server.pid)
            per = (full - base) * 1024 / max(sessions, 1)
            print(f"{sessions} idle sessions: {full} KiB ({per / 1024:.1f} KiB per session)")
            await fleet.close()
            await server.wait_for(rf"client mem-{sessions - 1} disconnected")
            await asyncio.sleep(allocator.TRIM_INTERVAL_S + 1)  # tunneld trims after a wave
            after = rss_kib(server.pid)
            print(f"after they left: {after} KiB ({100 * (after - base) / base:+.1f}% of base)")
            if reconnects <= 0:
                return
            gc.collect()
            mine = rss_kib()
            before = rss_kib(server.pid)
            await reconnect_storm(configs, reconnects)
            grew = rss_kib(server.pid) - before
            mine_grew = rss_kib() - mine
            print(
                f"{reconnects} reconnects: tunneld +{grew} KiB, clients +{mine_grew} KiB "
                f"({grew * 1024 / reconnects:.0f} and {mine_grew * 1024 / reconnects:.0f} "
                "bytes per reconnect)"
            )
        finally:
            await group.aclose()


def _server_config(work: Path, sessions: int) -> Path:
    path = work / "frps.toml"
    path.write_text(
        f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n'
        f"maxClients = {max(sessions, 1) + 10}\n"
    )
    return path


def _malloc_env() -> dict[str, str]:
    """glibc tunables (MALLOC_*) given to this script are passed on to tunneld."""
    return {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--reconnects", type=int, default=10000)
    parser.add_argument("--no-uvloop", action="store_true", help="tunneld on stock asyncio")
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.reconnects, ["--no-uvloop"] if args.no_uvloop else []))
