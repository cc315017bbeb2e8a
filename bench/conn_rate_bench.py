"""New connections per second through a tcp proxy, and what each connection costs.

Starts the load generator's echo server, nginx (one worker) and a tunneld + tunnelc pair
with tcp proxies to both, then takes turns: `--conns` sequential connect / 1-byte echo /
close cycles, and (with `--http-seconds`) wrk -t2 -c50 against nginx. For each turn it
prints the rate and, per process, the CPU microseconds and minor page faults (/proc/PID/stat
minflt) per connection or request.

With `--base DIR` a second pair runs the code in DIR (a checkout of another commit, put first
on PYTHONPATH) and the turns alternate A (DIR) / B (this tree), so an A/B comparison shares
one session's machine load; the summary gives medians.

    python -m bench.conn_rate_bench --runs 5 --conns 500 [--base /tmp/base] [--http-seconds 3]

Every loop is bounded by its count or duration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tcp_bench import LoadGen
from tests.support.peers import nginx, run_command
from tests.support.procs import ProcessGroup

WRK_SLACK_S: Final = 30.0  # wrk's own run plus start-up, on a loaded machine


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, minor faults) of a live process (Linux /proc). The CPU time is the
    scheduler's nanosecond count of time on a CPU, summed over the process's threads
    (/proc/PID/task/*/schedstat), not /proc/PID/stat's 10 ms ticks, which at 1,000
    connections resolve only 10 us per connection."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (
        sum(
            int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            for tid in os.listdir(f"/proc/{pid}/task")
        )
        / 1e9
    )
    return cpu, int(fields[7])


async def start_pair(
    group: ProcessGroup, work: Path, label: str, targets: dict[str, int], pythonpath: str | None
) -> tuple[dict[str, int], dict[str, int]]:
    """One tunneld + tunnelc; returns (public ports by proxy name, pids by process)."""
    env = {"PYTHONPATH": pythonpath} if pythonpath else None
    server_toml = work / f"{label}-frps.toml"
    server_toml.write_text(
        f'bindAddr = "127.0.0.1"\nbindPort = 0\nstateDir = "{work}/{label}-server"\n'
    )
    server = await group.start_tunnel(
        "tunneld", ["-c", str(server_toml)], name=f"tunneld-{label}", env=env
    )
    control = await server.control_address()
    fingerprint = await server.fingerprint()
    client_toml = work / f"{label}-frpc.toml"
    client_toml.write_text(
        f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
        f'stateDir = "{work}/{label}-client"\n'
        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
        + "".join(
            f'[[proxies]]\nname = "{name}"\ntype = "tcp"\nlocalPort = {port}\nremotePort = 0\n'
            for name, port in targets.items()
        )
    )
    client = await group.start_tunnel(
        "tunnelc", ["-c", str(client_toml)], name=f"tunnelc-{label}", env=env
    )
    ports = {name: (await client.proxy_endpoint(name)).port for name in targets}
    return ports, {"tunneld": server.pid, "tunnelc": client.pid}


async def measure(
    gen: LoadGen, args: argparse.Namespace, ports: dict[str, int], pids: dict[str, int]
) -> dict[str, float]:
    out: dict[str, float] = {}
    before = {name: proc_stat(pid) for name, pid in pids.items()}
    result = await gen.run(op="connect", port=ports["echo"], count=args.conns)
    out["conn/s"] = result["per_s"]
    out["conn p50 ms"] = result["p50_ms"]
    for name, pid in pids.items():
        cpu, faults = proc_stat(pid)
        out[f"{name} us/conn"] = (cpu - before[name][0]) / args.conns * 1e6
        out[f"{name} minflt/conn"] = (faults - before[name][1]) / args.conns
    if args.http_seconds:
        before = {name: proc_stat(pid) for name, pid in pids.items()}
        text = await run_command(
            ["wrk", "-t2", "-c50", f"-d{args.http_seconds}s",
             f"http://127.0.0.1:{ports['web']}/index.html"],
            timeout_s=args.http_seconds + WRK_SLACK_S,
        )  # fmt: skip
        rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
        total = re.search(r"(\d+) requests in", text)
        if rps is None or total is None or "Socket errors" in text or "Non-2xx" in text:
            raise RuntimeError(f"wrk failed or saw errors:\n{text}")
        out["req/s"] = float(rps[1])
        for name, pid in pids.items():
            cpu, faults = proc_stat(pid)
            out[f"{name} us/req"] = (cpu - before[name][0]) / int(total[1]) * 1e6
            out[f"{name} minflt/req"] = (faults - before[name][1]) / int(total[1])
    return out


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tunnelkit-connrate-") as tmp:
        work = Path(tmp)
        gen, gen_ports = await LoadGen.start()
        group = ProcessGroup(work / "logs")
        try:
            async with nginx(work, {"index.html": b"hello from nginx\n" * 4}) as web:
                targets = {"echo": gen_ports["echo"], "web": web.port}
                pairs = []
                if args.base:
                    pairs.append(("A", *await start_pair(group, work, "A", targets, args.base)))
                pairs.append(("B", *await start_pair(group, work, "B", targets, None)))
                results: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in pairs}
                for i in range(args.runs):
                    for label, ports, pids in pairs:
                        values = await measure(gen, args, ports, pids)
                        results[label].append(values)
                        shown = "  ".join(f"{k} {v:,.1f}" for k, v in values.items())
                        print(f"run {i + 1} {label}: {shown}", flush=True)
                print(f"load average {os.getloadavg()[0]:.1f}")
                for label, runs in results.items():
                    shown = "  ".join(
                        f"{k} {statistics.median(r[k] for r in runs):,.1f}" for k in runs[0]
                    )
                    print(f"median {label}: {shown}")
        finally:
            await group.aclose()
            await gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--conns", type=int, default=500)
    parser.add_argument("--http-seconds", type=int, default=0)
    parser.add_argument("--base", help="a checkout of the code to compare with (pair A)")
    args = parser.parse_args()
    if args.runs < 1 or args.conns < 1:
        parser.error("--runs and --conns must be at least 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
