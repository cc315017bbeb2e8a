"""UDP benchmark: `iperf3 -u` directly and through tunnelkit (TLS), in one run.

    .venv/bin/python bench/udp_bench.py [--seconds 5] [--runs 3] [--length 1400]

iperf3 needs its TCP control connection too, so the client exposes the iperf3 server with a
tcp and a udp proxy on the same public port number. Rates: unlimited (`-b 0`) and 100 Mbit/s.
Reports the receiver's rate (MB/s) and loss (%), medians of --runs, and the ratio to direct;
through the tunnel also each process's user and system CPU microseconds per delivered datagram
(from /proc/PID/stat: steadier than MB/s on a shared machine, and it counts the datagrams a
process read and dropped as part of the cost of those it delivered). Traffic stays on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.peers import iperf3_server, reserve_port, run_command  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402

RATES = {"max (-b 0)": "0", "100 Mbit/s": "100M"}
IPERF_ATTEMPTS = 3
IPERF_RETRY_PAUSE_S = 1.0


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def iperf(
    port: int, rate: str, args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, float]:
    for attempt in range(1, IPERF_ATTEMPTS + 1):
        before = {name: cpu_times(pid) for name, pid in pids.items()}
        out = await run_command(
            ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-b", rate,
             "-l", str(args.length), "-t", str(args.seconds), "--json"],
            timeout_s=args.seconds + 30,
        )  # fmt: skip
        result = json.loads(out)
        if "sum" in result.get("end", {}):
            break
        # On a loaded machine iperf3 sometimes reports an error instead of a test (its
        # control connection timed out): the server finishes it, then we ask again.
        if attempt == IPERF_ATTEMPTS:
            raise RuntimeError(f"iperf3 failed {attempt} times: {result.get('error', out)}")
        await asyncio.sleep(IPERF_RETRY_PAUSE_S)
    summary = result["end"]["sum"]
    received = summary["bytes"] * (1 - summary["lost_percent"] / 100)
    row = {"MB/s": received / summary["seconds"] / 1e6, "loss %": summary["lost_percent"]}
    delivered = max(1, summary["packets"] - summary["lost_packets"])
    for name, pid in pids.items():
        user, system = (b - a for a, b in zip(before[name], cpu_times(pid), strict=True))
        row[f"{name} user us"] = user / delivered * 1e6
        row[f"{name} sys us"] = system / delivered * 1e6
    return row


async def measure(
    port: int, args: argparse.Namespace, pids: dict[str, int] | None = None
) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for label, rate in RATES.items():
        runs = [await iperf(port, rate, args, pids or {}) for _ in range(args.runs)]
        result[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--length", type=int, default=1400, help="datagram size (bytes)")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="tunnelkit-udpbench-") as tmp:
        work = Path(tmp)
        group = ProcessGroup(work / "logs")
        try:
            async with iperf3_server(work) as iperf_server:
                results["direct"] = await measure(iperf_server.port, args)
                public = reserve_port(socket.SOCK_STREAM, socket.SOCK_DGRAM)
                (work / "frps.toml").write_text(
                    f'bindAddr = "127.0.0.1"\nbindPort = 0\nstateDir = "{work}/server"\n'
                )
                server = await group.start_tunnel("tunneld", ["-c", str(work / "frps.toml")])
                control = await server.control_address()
                fingerprint = await server.fingerprint()
                (work / "frpc.toml").write_text(
                    f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                    f'stateDir = "{work}/client"\n'
                    f'transport.tls.serverFingerprint = "{fingerprint}"\n'
                    f'[[proxies]]\nname = "iperf-ctl"\ntype = "tcp"\n'
                    f"localPort = {iperf_server.port}\nremotePort = {public}\n"
                    f'[[proxies]]\nname = "iperf-data"\ntype = "udp"\n'
                    f"localPort = {iperf_server.port}\nremotePort = {public}\n"
                )
                client = await group.start_tunnel("tunnelc", ["-c", str(work / "frpc.toml")])
                await client.proxy_endpoint("iperf-ctl")
                await client.proxy_endpoint("iperf-data")
                pids = {"tunneld": server.pid, "tunnelc": client.pid}
                results["tunnelkit (TLS)"] = await measure(public, args, pids)
        finally:
            await group.aclose()
    report(results, args)


def report(results: dict[str, dict[str, dict[str, float]]], args: Any) -> None:
    print(f"\nUDP benchmark (iperf3 -u, {args.length}-byte datagrams, {args.seconds} s, "
          f"median of {args.runs})\n")  # fmt: skip
    print("| path | rate | received MB/s | loss % |")
    print("|---|---|---|---|")
    for path, rows in results.items():
        for rate, row in rows.items():
            print(f"| {path} | {rate} | {row['MB/s']:.1f} | {row['loss %']:.2f} |")
    direct, tunnel = results["direct"], results["tunnelkit (TLS)"]
    print("\nCPU microseconds per delivered datagram, through the tunnel:\n")
    print("| rate | tunneld user | tunneld sys | tunnelc user | tunnelc sys |")
    print("|---|---|---|---|---|")
    for rate, row in tunnel.items():
        cells = " | ".join(
            f"{row[f'{name} {kind} us']:.1f}"
            for name in ("tunneld", "tunnelc")
            for kind in ("user", "sys")
        )
        print(f"| {rate} | {cells} |")
    print("\n| rate | tunnelkit / direct (MB/s) |")
    print("|---|---|")
    for rate in RATES:
        print(f"| {rate} | {tunnel[rate]['MB/s'] / direct[rate]['MB/s']:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
