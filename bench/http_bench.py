"""HTTP benchmark: `wrk -t2 -c50 --latency` against nginx directly and through the vhost.

    .venv/bin/python bench/http_bench.py [--seconds 10] [--runs 3]

The same nginx (started here, serving a small static file) is measured directly and through
tunneld's HTTP vhost + tunnelc, in one run: without the inspector, with the inspector in
memory only (`inspect.history = false`), with the inspector writing its SQLite history (the
default), and with history plus the inspector page open on a filtered live view (an
`/api/events?method=GET&status=2xx&q=nginx` subscriber, the filter evaluated on every
exchange, the text search reaching into the response body). Reports req/s and p50/p99
latency, medians of --runs, with the ratios. Traffic stays on 127.0.0.1.
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

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.peers import nginx, run_command  # noqa: E402
from tests.support.procs import INSPECTOR_READY, ProcessGroup  # noqa: E402

HOST = "bench.example.test"
INSPECTED_HOST = "inspected.example.test"
MEMORY_HOST = "memory.example.test"
FILTERED_HOST = "filtered.example.test"
LIVE_FILTER = "method=GET&status=2xx&q=nginx"  # matches every bench exchange, body included
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match[1]) * _UNITS[match[2]]


async def wrk(
    port: int, args: argparse.Namespace, host: str, threads: int = 2, conns: int = 50
) -> dict[str, float]:
    out = await run_command(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{args.seconds}s", "--latency",
         "-H", f"Host: {host}",
         f"http://127.0.0.1:{port}/index.html"],
        timeout_s=args.seconds + 30,
    )  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    total = float(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors[1]} error responses:\n{out}")
    return {"req/s": rps, "p50 ms": p50, "p99 ms": p99, "requests": total}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(port: int, args: argparse.Namespace, host: str = HOST) -> dict[str, float]:
    runs = [await wrk(port, args, host) for _ in range(args.runs)]
    result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    # Unloaded latency: one connection, one request at a time.
    single = [await wrk(port, args, host, threads=1, conns=1) for _ in range(args.runs)]
    result["c1 p50 ms"] = statistics.median(run["p50 ms"] for run in single)
    result["c1 p99 ms"] = statistics.median(run["p99 ms"] for run in single)
    return result


async def measure_interleaved(
    port: int, args: argparse.Namespace, hosts: dict[str, tuple[str, int]]
) -> dict[str, dict[str, float]]:
    """Like `measure` for several (host, tunnelc pid) on one vhost, taking turns run by run,
    so a load change on a shared machine hits every variant alike. Also reports the tunnelc's
    CPU time per request under load, which a busy machine disturbs far less than req/s."""
    loaded: dict[str, list[dict[str, float]]] = {name: [] for name in hosts}
    single: dict[str, list[dict[str, float]]] = {name: [] for name in hosts}
    for _ in range(args.runs):
        for name, (host, pid) in hosts.items():
            before = cpu_seconds(pid)
            run = await wrk(port, args, host)
            run["tunnelc us/req"] = (cpu_seconds(pid) - before) / run["requests"] * 1e6
            loaded[name].append(run)
        for name, (host, _) in hosts.items():
            single[name].append(await wrk(port, args, host, threads=1, conns=1))
    results: dict[str, dict[str, float]] = {}
    for name in hosts:
        runs = loaded[name]
        result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        result["c1 p50 ms"] = statistics.median(run["p50 ms"] for run in single[name])
        result["c1 p99 ms"] = statistics.median(run["p99 ms"] for run in single[name])
        results[name] = result
    return results


async def follow_events(url: str, seen: list[int]) -> None:
    """Hold the inspector page's live view open (filtered), counting the exchanges it gets."""
    async with aiohttp.ClientSession() as http, http.get(url) as events:
        async for line in events.content:
            if line.startswith(b"data: ") and b'"kind":"updated"' in line:
                seen[0] += 1


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tunnelkit-httpbench-") as tmp:
        work = Path(tmp)
        group = ProcessGroup(work / "logs")
        try:
            async with nginx(work, {"index.html": b"hello from nginx\n" * 4}) as web:
                results["direct (nginx)"] = await measure(web.port, args)
                (work / "frps.toml").write_text(
                    'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
                    f'stateDir = "{work}/server"\n'
                )
                server = await group.start_tunnel("tunneld", ["-c", str(work / "frps.toml")])
                control = await server.control_address()
                vhost = await server.http_vhost_address()
                fingerprint = await server.fingerprint()
                pids: dict[str, int] = {}
                inspectors: dict[str, int] = {}
                for name, host, inspect, history in (
                    ("web", HOST, "false", "false"),
                    ("seen", INSPECTED_HOST, "true", "true"),
                    ("memory", MEMORY_HOST, "true", "false"),
                    ("filtered", FILTERED_HOST, "true", "true"),
                ):
                    config = work / f"frpc-{name}.toml"
                    config.write_text(
                        f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                        f'stateDir = "{work}/client-{name}"\ninspect.enabled = {inspect}\n'
                        f"inspect.port = 0\ninspect.history = {history}\n"
                        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
                        f'[[proxies]]\nname = "{name}"\ntype = "http"\nlocalPort = {web.port}\n'
                        f'customDomains = ["{host}"]\n'
                    )
                    client = await group.start_tunnel("tunnelc", ["-c", str(config)])
                    await client.proxy_endpoint(name)
                    pids[name] = client.pid
                    if inspect == "true":
                        inspectors[name] = int((await client.wait_for(INSPECTOR_READY))["port"])
                live_seen = [0]
                live = asyncio.create_task(
                    follow_events(
                        f"http://127.0.0.1:{inspectors['filtered']}/api/events?{LIVE_FILTER}",
                        live_seen,
                    )
                )
                try:
                    results.update(
                        await measure_interleaved(
                            vhost.port,
                            args,
                            {
                                "tunnelkit vhost (TLS)": (HOST, pids["web"]),
                                "vhost + inspector (memory)": (MEMORY_HOST, pids["memory"]),
                                "vhost + inspector + history": (INSPECTED_HOST, pids["seen"]),
                                "vhost + inspector + history + filtered page": (
                                    FILTERED_HOST,
                                    pids["filtered"],
                                ),
                            },
                        )
                    )
                finally:
                    live.cancel()
                    await asyncio.gather(live, return_exceptions=True)
        finally:
            await group.aclose()
    print(
        f"\nHTTP benchmark (wrk -t2 -c50 -d{args.seconds}s --latency; c1 = wrk -t1 -c1; "
        f"median of {args.runs})\n"
    )
    keys = ["req/s", "p50 ms", "p99 ms", "c1 p50 ms", "c1 p99 ms"]
    results["direct (nginx)"]["tunnelc us/req"] = 0.0
    print("| path | " + " | ".join(keys) + " | tunnelc us/req |")
    print("|---|" + "---|" * (len(keys) + 1))
    for name, row in results.items():
        print(
            f"| {name} | "
            + " | ".join(f"{row[k]:.2f}" for k in keys)
            + f" | {row['tunnelc us/req']:.1f} |"
        )
    direct, tunnel = results["direct (nginx)"], results["tunnelkit vhost (TLS)"]
    memory, seen = results["vhost + inspector (memory)"], results["vhost + inspector + history"]
    filtered = results["vhost + inspector + history + filtered page"]
    print(
        "| tunnelkit / direct | " + " | ".join(f"{tunnel[k] / direct[k]:.2f}" for k in keys) + " |"
    )
    print(
        "| inspector (memory) / off | "
        + " | ".join(f"{memory[k] / tunnel[k]:.2f}" for k in keys)
        + " |"
    )
    print(
        "| inspector + history / off | "
        + " | ".join(f"{seen[k] / tunnel[k]:.2f}" for k in keys)
        + " |"
    )
    print("| history / memory | " + " | ".join(f"{seen[k] / memory[k]:.2f}" for k in keys) + " |")
    print(
        "| history + filtered page / memory | "
        + " | ".join(f"{filtered[k] / memory[k]:.2f}" for k in keys)
        + " |"
    )
    cpu = "tunnelc us/req"
    print(
        f"\ntunnelc CPU per request under load: off {tunnel[cpu]:.1f} us, inspector in memory "
        f"{memory[cpu]:.1f} us, inspector + history {seen[cpu]:.1f} us "
        f"(history adds {100 * (seen[cpu] / memory[cpu] - 1):+.1f}% to the inspector's tunnelc), "
        f"history + filtered page {filtered[cpu]:.1f} us "
        f"({100 * (filtered[cpu] / memory[cpu] - 1):+.1f}%)"
    )
    print(
        f"filtered live view: {live_seen[0]} updates received; req/s with history and the "
        f"filtered page vs the in-memory inspector: {filtered['req/s'] / memory['req/s']:.3f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
