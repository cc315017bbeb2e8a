"""HTTP benchmark: `wrk -t2 -c50 --latency` against nginx directly and through the vhost.

    .venv/bin/python bench/http_bench.py [--seconds 10] [--runs 3]

The same nginx (started here, serving a small static file) is measured directly and through
tunneld's HTTP vhost + tunnelc, in one run: without the inspector, with the inspector in
memory only (`inspect.history = false`), and with the inspector writing its SQLite history
(the default). Reports req/s and p50/p99 latency, medians of --runs, with the ratios.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.peers import nginx, run_command  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402

HOST = "bench.example.test"
INSPECTED_HOST = "inspected.example.test"
MEMORY_HOST = "memory.example.test"
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
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors[1]} error responses:\n{out}")
    return {"req/s": rps, "p50 ms": p50, "p99 ms": p99}


async def measure(port: int, args: argparse.Namespace, host: str = HOST) -> dict[str, float]:
    runs = [await wrk(port, args, host) for _ in range(args.runs)]
    result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    # Unloaded latency: one connection, one request at a time.
    single = [await wrk(port, args, host, threads=1, conns=1) for _ in range(args.runs)]
    result["c1 p50 ms"] = statistics.median(run["p50 ms"] for run in single)
    result["c1 p99 ms"] = statistics.median(run["p99 ms"] for run in single)
    return result


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
                for name, host, inspect, history in (
                    ("web", HOST, "false", "false"),
                    ("seen", INSPECTED_HOST, "true", "true"),
                    ("memory", MEMORY_HOST, "true", "false"),
                ):
                    config = work / f"frpc-{name}.toml"
                    config.write_text(
                        f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                        f'stateDir = "{work}/client"\ninspect.enabled = {inspect}\n'
                        f"inspect.port = 0\ninspect.history = {history}\n"
                        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
                        f'[[proxies]]\nname = "{name}"\ntype = "http"\nlocalPort = {web.port}\n'
                        f'customDomains = ["{host}"]\n'
                    )
                    client = await group.start_tunnel("tunnelc", ["-c", str(config)])
                    await client.proxy_endpoint(name)
                results["tunnelkit vhost (TLS)"] = await measure(vhost.port, args)
                results["vhost + inspector (memory)"] = await measure(vhost.port, args, MEMORY_HOST)
                results["vhost + inspector + history"] = await measure(
                    vhost.port, args, INSPECTED_HOST
                )
        finally:
            await group.aclose()
    print(
        f"\nHTTP benchmark (wrk -t2 -c50 -d{args.seconds}s --latency; c1 = wrk -t1 -c1; "
        f"median of {args.runs})\n"
    )
    keys = ["req/s", "p50 ms", "p99 ms", "c1 p50 ms", "c1 p99 ms"]
    print("| path | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    direct, tunnel = results["direct (nginx)"], results["tunnelkit vhost (TLS)"]
    memory, seen = results["vhost + inspector (memory)"], results["vhost + inspector + history"]
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


if __name__ == "__main__":
    asyncio.run(main())
