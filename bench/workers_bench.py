"""More than one core (issue 12 item 6): the HTTP vhost with 1 worker and with 2, in one run.

    .venv/bin/python bench/workers_bench.py [--seconds 10] [--runs 3] [--clients 4]

Starts Debian's redis-server (Unix socket) and nginx serving a small static file. For each
worker count (1, then 2, taking turns run by run so that a load change on the shared machine
hits both alike) it starts `tunneld --workers N` on fixed ports (cluster.reusePort: the
workers share the control and vhost ports), then --clients tunnelc, each with an http proxy
to nginx under its own domain; each client lands on the worker the kernel picked. Then one
`wrk -t1 -c{conns} --latency` per domain at once, all against the one shared vhost port, and
reports the summed req/s, the median p99, and the CPU seconds each tunneld worker used per
request. The machine's load average is printed with each run. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import cpu_seconds, wrk  # noqa: E402
from tests.support.peers import nginx, run_command  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402
from tests.support.redisserver import redis_server  # noqa: E402

SECRET: Final = "bench-workers-secret"
ROUTE_WAIT_S: Final = 30.0  # for every worker to learn every route from the routes channel
CONNS_TOTAL: Final = 48  # wrk connections in all, split between the domains
ROUTE_CHECKS: Final = 8  # new connections per domain that must all answer 200 before wrk


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_routed(port: int, host: str) -> None:
    """Until ROUTE_CHECKS new connections in a row answer 200 (whichever worker they hit)."""
    ok = 0
    async with asyncio.timeout(ROUTE_WAIT_S):
        while ok < ROUTE_CHECKS:
            out = await run_command(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                 "-H", f"Host: {host}", f"http://127.0.0.1:{port}/index.html"],
                timeout_s=10,
            )  # fmt: skip
            ok = ok + 1 if out.strip() == "200" else 0
            if not ok:
                await asyncio.sleep(0.1)


def worker_pids(parent: int) -> list[int]:
    """The parent's children (the workers), from /proc."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children]


async def one_config(
    work: Path, redis_url: str, web_port: int, workers: int, args: argparse.Namespace, run: int
) -> dict[str, float]:
    """Start N workers and the clients, load them, stop everything; the run's figures."""
    group = ProcessGroup(work / "logs")
    tag = f"w{workers}-r{run}"
    control, vhost = unused_port(), unused_port()
    try:
        config = work / f"frps-{tag}.toml"
        config.write_text(
            f'bindAddr = "127.0.0.1"\nbindPort = {control}\nvhostHTTPPort = {vhost}\n'
            f'stateDir = "{work}/server"\n'
            f'[cluster]\nredisURL = "{redis_url}"\nnodeName = "{tag}"\nsecret = "{SECRET}"\n'
        )
        parent = await group.start_tunnel("tunneld", ["-c", str(config), "--workers", str(workers)])
        for index in range(workers):
            await parent.wait_for(rf"cluster: node {tag}-w{index} joined", ROUTE_WAIT_S)
        fingerprint = await parent.fingerprint()
        hosts = [f"app{i}.{tag}.bench.test" for i in range(args.clients)]
        for index, host in enumerate(hosts):
            cfg = work / f"frpc-{tag}-{index}.toml"
            cfg.write_text(
                f'serverAddr = "127.0.0.1"\nserverPort = {control}\n'
                f'stateDir = "{work}/client-{tag}-{index}"\ninspect.enabled = false\n'
                f'transport.tls.serverFingerprint = "{fingerprint}"\n'
                f'[[proxies]]\nname = "web-{tag}-{index}"\ntype = "http"\n'
                f"localPort = {web_port}\n"
                f'customDomains = ["{host}"]\n'
            )
            client = await group.start_tunnel("tunnelc", ["-c", str(cfg)])
            await client.proxy_endpoint(f"web-{tag}-{index}")
        for host in hosts:
            await wait_routed(vhost, host)
        pids = worker_pids(parent.pid)
        before = [cpu_seconds(pid) for pid in pids]
        load = os.getloadavg()[0]
        per_host = argparse.Namespace(seconds=args.seconds)
        conns = max(1, CONNS_TOTAL // len(hosts))
        runs = await asyncio.gather(
            *(wrk(vhost, per_host, host, threads=1, conns=conns) for host in hosts)
        )
        used = [cpu_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]
        requests = sum(r["requests"] for r in runs)
        return {
            "req/s": sum(r["req/s"] for r in runs),
            "p99 ms": statistics.median(r["p99 ms"] for r in runs),
            "cpu us/req": sum(used) / requests * 1e6,
            "busiest worker cpu %": max(used) / args.seconds * 100,
            "load": load,
        }
    finally:
        await group.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="tunnelkit-workersbench-") as tmp:
        work = Path(tmp)
        async with (
            redis_server(work / "redis") as redis,
            nginx(work, {"index.html": b"hello from nginx\n" * 4}) as web,
        ):
            for run in range(args.runs):
                for workers in results:
                    figures = await one_config(work, redis.url, web.port, workers, args, run)
                    results[workers].append(figures)
                    print(f"run {run} workers {workers}: {figures}", flush=True)
    print(
        f"\nWorkers benchmark ({args.clients} tunnelc, {args.clients} x wrk -t1 "
        f"-c{CONNS_TOTAL // args.clients} -d{args.seconds}s at once on the shared vhost port; "
        f"median of {args.runs}; {os.cpu_count()} cores)\n"
    )
    keys = ["req/s", "p99 ms", "cpu us/req", "busiest worker cpu %", "load"]
    print("| workers | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for workers, runs in results.items():
        row = {key: statistics.median(r[key] for r in runs) for key in keys}
        print(f"| {workers} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    base = statistics.median(r["req/s"] for r in results[1])
    top = statistics.median(r["req/s"] for r in results[2])
    print(f"\n2 workers / 1 worker: {top / base:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
