"""Sizing the cluster's Redis: 100 nodes, 10,000 clients and 100,000 routes (issue 16).

    .venv/bin/python bench/cluster_sim.py [--nodes 100] [--clients 10000] [--routes 100000]
        [--lease 15] [--steady 20] [--deadline 600]

Starts Debian's `redis-server` on a Unix socket of its own, then runs `--nodes` real
`ClusterRegistry` instances in this process (each with its own Redis connections, its routes
channel subscription and its renewal loop, as a tunneld node has). The clients are spread
evenly over the nodes, and each client claims its routes in one claim, as a proxy with
several domains does.

Phases, each measured from Redis's own counters (INFO commandstats and INFO cpu):
1. fill: every client claims its routes (each claim is published to every node);
2. steady: `--steady` seconds of lease renewals only;
3. node loss: one node dies without releasing (kill -9), and each of its clients claims its
   routes again through the next live node (a takeover at once, as a reconnecting client).
   The phase ends when every live node's cache shows the new owners.

Every phase is bounded in count (the numbers above) and in time (`--deadline`).
Commands run inside the Lua scripts (GET, SET, PEXPIRE, PUBLISH) are counted apart from the
commands the nodes send (EVALSHA, SET, ...): the first are the work per key, the second the
round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from tunnel_server.cluster.claims import MAX_CLAIM_NAMES, Owner, claim_key
from tunnel_server.cluster.registry import DEFAULT_PREFIX, ClusterRegistry

READY_TIMEOUT_S: Final = 20.0  # redis-server's start
CLAIM_CONCURRENCY: Final = 8  # claims in flight at once (this one process plays 100 nodes)
SCRIPT_COMMANDS: Final = ("get", "set", "pexpire", "publish", "del")  # also called by scripts


@dataclass
class Sample:
    """Redis's counters at one moment."""

    at: float
    calls: dict[str, int]
    cpu_s: float


async def sample(client: aioredis.Redis) -> Sample:
    stats = await client.info("commandstats")
    cpu = await client.info("cpu")
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }
    return Sample(time.monotonic(), calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))


def report(phase: str, before: Sample, after: Sample) -> dict[str, float]:
    """Print one phase's rates; returns them for the summary."""
    seconds = max(after.at - before.at, 1e-9)
    delta = {
        name: after.calls.get(name, 0) - before.calls.get(name, 0)
        for name in set(after.calls) | set(before.calls)
    }
    delta = {name: count for name, count in delta.items() if count > 0 and name != "info"}
    total = sum(delta.values())
    cpu = (after.cpu_s - before.cpu_s) / seconds
    detail = ", ".join(f"{name} {count / seconds:,.0f}/s" for name, count in sorted(delta.items()))
    print(
        f"{phase}: {seconds:.1f} s, {total / seconds:,.0f} Redis commands/s"
        f" (incl. those inside scripts), Redis CPU {cpu * 100:.1f}% of a core"
    )
    print(f"  {detail}")
    return {"seconds": seconds, "ops_per_s": total / seconds, "cpu": cpu}


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """A throwaway redis-server on a Unix socket; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("cluster_sim: redis-server is not installed (Debian: redis-server)")
    directory = Path(tempfile.mkdtemp(prefix="tk-sim-"))
    sock = directory / "redis.sock"
    argv = [
        exe, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
        "--save", "", "--appendonly", "no", "--dir", str(directory), "--logfile", "",
        "--maxclients", "10000",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT_S):
            while b"eady to accept connections" not in await proc.stdout.readline():
                if proc.stdout.at_eof():
                    raise SystemExit("cluster_sim: redis-server exited at start")
        drain = asyncio.create_task(proc.stdout.read())
        yield f"unix://{sock}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(NameError, asyncio.CancelledError):
            await drain


async def wait_caches(
    nodes: list[ClusterRegistry], keys: list[tuple[str, Owner]], label: str
) -> None:
    """Wait until every node's cache shows every (route, owner) pair."""
    for node in nodes:
        remaining = list(keys)

        def current(
            node: ClusterRegistry = node, remaining: list[tuple[str, Owner]] = remaining
        ) -> bool:
            remaining[:] = [(k, o) for k, o in remaining if node.owner_of("domain", k) != o]
            return not remaining

        await node.wait_until(current)
    print(f"  {label}: every live node's cache is current")


async def run(args: argparse.Namespace) -> None:
    per_client = args.routes // args.clients
    if not 1 <= per_client <= MAX_CLAIM_NAMES:
        raise SystemExit(f"cluster_sim: routes per client must be 1 to {MAX_CLAIM_NAMES}")
    async with redis_server() as url, asyncio.timeout(args.deadline):
        monitor = aioredis.from_url(url, decode_responses=True)
        nodes = [
            ClusterRegistry.from_url(url, f"node-{i:03d}", f"10.0.{i // 250}.{i % 250}:7001",
                                     lease_s=args.lease)
            for i in range(args.nodes)
        ]  # fmt: skip
        try:
            await asyncio.gather(*(node.start() for node in nodes))
            await asyncio.gather(*(node.wait_synced() for node in nodes))
            print(f"{args.nodes} nodes joined; {len(await nodes[0].nodes())} listed live")

            # clients[c] = (home node index, owner, routes)
            clients: list[tuple[int, Owner, list[str]]] = []
            for c in range(args.clients):
                home = c % args.nodes
                owner = Owner(nodes[home].node, f"user-{c % 1000}", f"client-{c}")
                routes = [f"r{r}.c{c}.sim.example/" for r in range(per_client)]
                clients.append((home, owner, routes))

            gate = asyncio.Semaphore(args.concurrency)

            async def claim(node: ClusterRegistry, owner: Owner, routes: list[str]) -> None:
                async with gate:
                    refused = await node.claim("domain", routes, owner)
                if refused is not None:
                    raise SystemExit(f"cluster_sim: claim refused: {refused}")

            before = await sample(monitor)
            await asyncio.gather(*(claim(nodes[h], o, r) for h, o, r in clients))
            await wait_caches(nodes, [(r[0], o) for _, o, r in clients], "fill")
            fill = report("fill (every client claims)", before, await sample(monitor))
            keys = await monitor.dbsize()
            memory = (await monitor.info("memory"))["used_memory_human"]
            print(f"  Redis holds {keys:,} keys ({memory})")

            # steady state: renewals only
            await asyncio.sleep(args.lease / 3)  # one renewal round started after the fill
            before = await sample(monitor)
            await asyncio.sleep(args.steady)
            steady = report("steady (lease renewals)", before, await sample(monitor))

            # a node dies; its clients claim again through the next live node
            dead = nodes[0]
            live = nodes[1:]
            orphans = [(o, r) for h, o, r in clients if h == 0]
            await dead.close(release=False)
            before = await sample(monitor)
            started = time.monotonic()
            moved: list[tuple[str, Owner]] = []
            takeovers = []
            for i, (owner, routes) in enumerate(orphans):
                node = live[i % len(live)]
                new = Owner(node.node, owner.user, owner.client)
                takeovers.append(claim(node, new, routes))
                moved.extend((name, new) for name in routes)
            await asyncio.gather(*takeovers)
            claimed = time.monotonic() - started
            await wait_caches(live, moved, "node loss")
            current = time.monotonic() - started
            loss = report("node loss (takeovers)", before, await sample(monitor))
            print(
                f"  {len(orphans)} clients ({len(moved):,} routes) taken over in"
                f" {claimed * 1000:.0f} ms; every live cache current after {current * 1000:.0f} ms"
            )
            held = await monitor.mget([claim_key(DEFAULT_PREFIX, "domain", n) for n, _ in moved])
            if any(Owner.decode(raw) != owner for raw, (_, owner) in zip(held, moved, strict=True)):
                raise SystemExit("cluster_sim: a route is not held by its new owner in Redis")
            print(
                f"summary: steady {steady['ops_per_s']:,.0f} ops/s"
                f" ({steady['cpu'] * 100:.1f}% CPU),"
                f" fill {fill['ops_per_s']:,.0f} ops/s, node loss {loss['ops_per_s']:,.0f} ops/s"
                f" ({loss['cpu'] * 100:.1f}% CPU); RSS of this process"
                f" {_rss_mib():.0f} MiB"
            )
        finally:
            await asyncio.gather(
                *(n.close(release=False) for n in nodes[1:]), return_exceptions=True
            )
            await monitor.aclose()


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--routes", type=int, default=100_000)
    parser.add_argument("--lease", type=float, default=15.0, help="seconds (tunneld's default)")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of steady state")
    parser.add_argument(
        "--concurrency", type=int, default=CLAIM_CONCURRENCY, help="claims in flight at once"
    )
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole run")
    args: Any = parser.parse_args()
    if args.nodes < 2 or args.clients < args.nodes:
        raise SystemExit("cluster_sim: need at least 2 nodes and a client per node")
    # SIGTERM unwinds like Ctrl-C, so that the redis-server this script started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        asyncio.run(run(args))
    except TimeoutError:
        raise SystemExit(f"cluster_sim: not done within --deadline {args.deadline} s") from None


if __name__ == "__main__":
    main()
