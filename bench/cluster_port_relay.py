"""A fixed TCP port reached directly at its owner vs through another node (cluster.relayPorts).

    .venv/bin/python bench/cluster_port_relay.py [--seconds 5] [--runs 3] [--conns 2000]

Starts Debian's redis-server (Unix socket), an iperf3 server, a TCP echo server and two
tunneld nodes with `cluster.relayPorts = true`: node a binds its public ports on 127.0.0.1,
node b on 127.0.0.2, so both listen on the same port numbers. One tunnelc logs in to node a
with two tcp proxies on fixed ports (to iperf3 and to the echo). Then, taking turns run by
run so that a load change on the shared machine hits both paths alike:

- bulk: `iperf3 -c HOST -p PORT -t SECONDS` (the visitor sends) and the same with `-R` (the
  visitor receives), in MiB/s as iperf3's receiver counted them;
- connections/s: CONCURRENCY workers each open a connection, send 1 byte, read the echo and
  close, until --conns connections are done.

HOST is 127.0.0.1 (direct: visitor -> node a -> tunnelc) or 127.0.0.2 (relayed: visitor ->
node b -> internal link -> node a -> tunnelc). Reports medians of --runs. Traffic stays on
loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import cpu_seconds  # noqa: E402
from tests.support.echo import tcp_echo_server  # noqa: E402
from tests.support.peers import run_command  # noqa: E402
from tests.support.procs import ProcessGroup, TunnelProcess  # noqa: E402
from tests.support.redisserver import redis_server  # noqa: E402

SECRET: Final = "bench-cluster-secret"
RELAY_WAIT_S: Final = 30.0  # for node b to learn the ports and listen
CONCURRENCY: Final = 8  # connection workers in the connections/s row
PATHS: Final = {"direct (owner, node a)": "127.0.0.1", "relayed (node b)": "127.0.0.2"}


def free_port() -> int:
    """A port number free on both 127.0.0.1 and 127.0.0.2."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            with socket.socket() as other:
                other.bind(("127.0.0.2", port))
        except OSError:
            continue
        return port


async def start_node(
    group: ProcessGroup, work: Path, name: str, bind: str, redis_url: str
) -> TunnelProcess:
    config = work / f"frps-{name}.toml"
    config.write_text(
        f'bindAddr = "127.0.0.1"\nbindPort = 0\nproxyBindAddr = "{bind}"\n'
        f'stateDir = "{work}/{name}"\n'
        f'[cluster]\nredisURL = "{redis_url}"\nnodeName = "{name}"\nsecret = "{SECRET}"\n'
        "relayPorts = true\n"
    )
    node = await group.start_tunnel("tunneld", ["-c", str(config)])
    await node.wait_for(rf"cluster: node {name} joined")
    return node


async def iperf_mib_s(host: str, port: int, seconds: int, reverse: bool) -> float:
    argv = ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J"]
    out = await run_command(argv + (["-R"] if reverse else []), timeout_s=seconds + 60)
    received = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    return float(received) / 8 / (1024 * 1024)


async def connections_per_s(host: str, port: int, total: int) -> float:
    """Open, send 1 byte, read it back, close: `total` times over CONCURRENCY workers."""
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"x")
                if await reader.readexactly(1) != b"x":
                    raise AssertionError("the echo answered something else")
            finally:
                writer.close()
                await writer.wait_closed()

    start = time.perf_counter()
    async with asyncio.timeout(300):
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return total / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--conns", type=int, default=2000)
    args = parser.parse_args()
    rows: dict[str, dict[str, list[float]]] = {
        name: {"up": [], "down": [], "conn/s": []} for name in PATHS
    }
    cpu: dict[str, dict[str, list[float]]] = {name: {"a": [], "b": []} for name in PATHS}
    bulk_port, echo_port, iperf_local = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="tunnelkit-portrelaybench-") as tmp:
        work = Path(tmp)
        group = ProcessGroup(work / "logs")
        try:
            async with redis_server(work / "redis") as redis, tcp_echo_server() as echo:
                await group.start(
                    ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(iperf_local)],
                    expect_exit_code=None,
                )
                node_a = await start_node(group, work, "node-a", "127.0.0.1", redis.url)
                node_b = await start_node(group, work, "node-b", "127.0.0.2", redis.url)
                control = await node_a.control_address()
                config = work / "frpc.toml"
                config.write_text(
                    f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                    f'stateDir = "{work}/client"\ninspect.enabled = false\n'
                    f'transport.tls.serverFingerprint = "{await node_a.fingerprint()}"\n'
                    f'[[proxies]]\nname = "bulk"\ntype = "tcp"\nlocalPort = {iperf_local}\n'
                    f"remotePort = {bulk_port}\n"
                    f'[[proxies]]\nname = "echo"\ntype = "tcp"\nlocalPort = {echo.port}\n'
                    f"remotePort = {echo_port}\n"
                )
                client = await group.start_tunnel("tunnelc", ["-c", str(config)])
                await client.proxy_endpoint("bulk")
                await client.proxy_endpoint("echo")
                for port in (bulk_port, echo_port):
                    await node_b.wait_for(rf"relaying port {port} to its owner", RELAY_WAIT_S)
                for _ in range(args.runs):
                    for name, host in PATHS.items():
                        row = rows[name]
                        row["up"].append(await iperf_mib_s(host, bulk_port, args.seconds, False))
                        row["down"].append(await iperf_mib_s(host, bulk_port, args.seconds, True))
                        before = {"a": cpu_seconds(node_a.pid), "b": cpu_seconds(node_b.pid)}
                        row["conn/s"].append(await connections_per_s(host, echo_port, args.conns))
                        for key, pid in (("a", node_a.pid), ("b", node_b.pid)):
                            used = cpu_seconds(pid) - before[key]
                            cpu[name][key].append(used / args.conns * 1e6)
        finally:
            await group.aclose()
    print(
        f"\nCluster port relay benchmark (iperf3 -t{args.seconds}; {args.conns} connections "
        f"over {CONCURRENCY} workers; median of {args.runs})\n"
    )
    print("| path | visitor sends MiB/s | visitor receives MiB/s | connections/s |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        med = {key: statistics.median(values) for key, values in row.items()}
        print(f"| {name} | {med['up']:.0f} | {med['down']:.0f} | {med['conn/s']:.0f} |")
    print("\nCPU per connection (connections/s phase), node a (owner) / node b (ingress):")
    for name, used in cpu.items():
        a, b = (statistics.median(used[key]) for key in ("a", "b"))
        print(f"- {name}: {a:.0f} us / {b:.0f} us")


if __name__ == "__main__":
    asyncio.run(main())
