"""The relay hop's cost (issue 16): a local hit and a relayed hit in one run.

    .venv/bin/python bench/cluster_relay.py [--seconds 10] [--runs 3]

Starts Debian's redis-server (Unix socket), nginx serving a small static file, two tunneld
nodes (`node-a`, `node-b`) with relays on, and one tunnelc logged in to node a with an http
proxy to nginx. Then `wrk -t2 -c50 --latency` (and `wrk -t1 -c1` for unloaded latency)
against node a's vhost (the local hit: visitor -> node a -> tunnelc -> nginx) and node b's
vhost (the relayed hit: visitor -> node b -> internal link -> node a -> tunnelc -> nginx),
taking turns run by run so that a load change on the shared machine hits both alike.
Reports req/s and p50/p99, medians of --runs. Then the cost per byte, which decides the
TCP port design (docs/cluster.md): a BULK_MIB MiB download through each path, with curl,
in MiB/s. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import cpu_seconds, wrk  # noqa: E402
from tests.support.peers import nginx, run_command  # noqa: E402
from tests.support.procs import ProcessGroup, TunnelProcess  # noqa: E402
from tests.support.redisserver import redis_server  # noqa: E402

HOST: Final = "relay.bench.test"
SECRET: Final = "bench-cluster-secret"
ROUTE_WAIT_S: Final = 30.0  # for node b to learn the route from the routes channel
BULK_MIB: Final = 64  # the bulk download's size


async def start_node(
    group: ProcessGroup, work: Path, name: str, redis_url: str
) -> tuple[TunnelProcess, int]:
    config = work / f"frps-{name}.toml"
    config.write_text(
        'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
        f'stateDir = "{work}/{name}"\n'
        f'[cluster]\nredisURL = "{redis_url}"\nnodeName = "{name}"\nsecret = "{SECRET}"\n'
    )
    node = await group.start_tunnel("tunneld", ["-c", str(config)])
    await node.wait_for(rf"cluster: node {name} joined")
    return node, (await node.http_vhost_address()).port


async def wait_routed(port: int) -> None:
    """Until node b serves the route (it learns it from the routes channel)."""
    async with asyncio.timeout(ROUTE_WAIT_S):
        while True:
            out = await run_command(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                 "-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/index.html"],
                timeout_s=10,
            )  # fmt: skip
            if out.strip() == "200":
                return
            await asyncio.sleep(0.1)


async def download_mib_s(port: int) -> float:
    """One BULK_MIB MiB download through a vhost port; MiB/s as curl measured it."""
    out = await run_command(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{speed_download}",
         "-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/big.bin"],
        timeout_s=120,
    )  # fmt: skip
    return float(out) / (1024 * 1024)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    loaded: dict[str, list[dict[str, float]]] = {"local hit": [], "relayed hit": []}
    single: dict[str, list[dict[str, float]]] = {"local hit": [], "relayed hit": []}
    bulk: dict[str, list[float]] = {"local hit": [], "relayed hit": []}
    with tempfile.TemporaryDirectory(prefix="tunnelkit-relaybench-") as tmp:
        work = Path(tmp)
        group = ProcessGroup(work / "logs")
        try:
            async with (
                redis_server(work / "redis") as redis,
                nginx(
                    work,
                    {
                        "index.html": b"hello from nginx\n" * 4,
                        "big.bin": bytes(range(256)) * (BULK_MIB * 4096),
                    },
                ) as web,
            ):
                node_a, port_a = await start_node(group, work, "node-a", redis.url)
                node_b, port_b = await start_node(group, work, "node-b", redis.url)
                control = await node_a.control_address()
                config = work / "frpc.toml"
                config.write_text(
                    f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                    f'stateDir = "{work}/client"\ninspect.enabled = false\n'
                    f'transport.tls.serverFingerprint = "{await node_a.fingerprint()}"\n'
                    f'[[proxies]]\nname = "web"\ntype = "http"\nlocalPort = {web.port}\n'
                    f'customDomains = ["{HOST}"]\n'
                )
                client = await group.start_tunnel("tunnelc", ["-c", str(config)])
                await client.proxy_endpoint("web")
                await wait_routed(port_b)
                ports = {"local hit": port_a, "relayed hit": port_b}
                cpu: dict[str, list[float]] = {"node a": [], "node b": []}
                for _ in range(args.runs):
                    for name, port in ports.items():
                        before = (cpu_seconds(node_a.pid), cpu_seconds(node_b.pid))
                        run = await wrk(port, args, HOST)
                        if name == "relayed hit":
                            for key, pid, start in (
                                ("node a", node_a.pid, before[0]),
                                ("node b", node_b.pid, before[1]),
                            ):
                                used = cpu_seconds(pid) - start
                                cpu[key].append(used / run["requests"] * 1e6)
                        loaded[name].append(run)
                    for name, port in ports.items():
                        single[name].append(await wrk(port, args, HOST, threads=1, conns=1))
                    for name, port in ports.items():
                        bulk[name].append(await download_mib_s(port))
        finally:
            await group.aclose()
    print(
        f"\nCluster relay benchmark (wrk -t2 -c50 -d{args.seconds}s --latency; "
        f"c1 = wrk -t1 -c1; median of {args.runs})\n"
    )
    keys = ["req/s", "p50 ms", "p99 ms"]
    print("| path | " + " | ".join(keys) + " | c1 p50 ms | c1 p99 ms |")
    print("|---|" + "---|" * (len(keys) + 2))
    for name in loaded:
        row = {key: statistics.median(run[key] for run in loaded[name]) for key in keys}
        c1 = [statistics.median(run[key] for run in single[name]) for key in ("p50 ms", "p99 ms")]
        print(
            f"| {name} | "
            + " | ".join(f"{row[k]:.2f}" for k in keys)
            + f" | {c1[0]:.2f} | {c1[1]:.2f} |"
        )
    print(f"\n{BULK_MIB} MiB download (curl), median MiB/s:")
    for name, speeds in bulk.items():
        print(f"- {name}: {statistics.median(speeds):.0f} MiB/s")
    print(
        f"\nCPU per relayed request: node a (owner) {statistics.median(cpu['node a']):.0f} us, "
        f"node b (ingress) {statistics.median(cpu['node b']):.0f} us"
    )


if __name__ == "__main__":
    asyncio.run(main())
