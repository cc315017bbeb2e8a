"""HTTPS edge benchmark: h2load against plain HTTP and terminated HTTPS (h1 and h2), one run.

    .venv/bin/python bench/edge_tls_bench.py [--seconds 10] [--runs 3] [--clients 50]

One nginx (serving a small static file) sits behind tunnelc; tunneld has an HTTP vhost and an
HTTPS edge holding a throwaway certificate for the name. The same h2load (nghttp2-client)
measures, interleaved run by run so machine noise hits every row alike:

- nginx directly (HTTP/1.1, the floor);
- tunneld's plain HTTP vhost (HTTP/1.1);
- the HTTPS edge, TLS terminated, HTTP/1.1 (`--h1`);
- the HTTPS edge, TLS terminated, HTTP/2 (`-m 4` streams per connection).

Reports req/s and p50/p99 latency (from h2load's per-request log), medians of --runs.
Traffic stays on 127.0.0.1; each run is bounded by --seconds.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.certs import make_ca, make_leaf  # noqa: E402
from tests.support.peers import nginx, run_command  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402

HOST = "bench.edge.test"
H2LOAD = "h2load"  # Debian package nghttp2-client


async def h2load(
    url: str, port: int, args: argparse.Namespace, log: Path, *, h1: bool, streams: int = 1
) -> dict[str, float]:
    argv = [
        H2LOAD, "-c", str(args.clients), "-t", "2", "-D", str(args.seconds),
        "-m", str(streams), "--log-file", str(log), "--connect-to", f"127.0.0.1:{port}",
    ]  # fmt: skip
    if h1:
        argv.append("--h1")
    out = await run_command([*argv, url], timeout_s=args.seconds + 30)
    rps = float(re.search(r"finished in .*?, ([\d.]+) req/s", out)[1])  # type: ignore[index]
    failed = int(re.search(r"(\d+) failed", out)[1])  # type: ignore[index]
    if failed:
        raise RuntimeError(f"h2load saw {failed} failed requests:\n{out}")
    lines = (await asyncio.to_thread(log.read_text)).splitlines()
    durations = sorted(
        int(line.split("\t")[2]) / 1000.0
        for line in lines
        if line.count("\t") >= 2 and line.split("\t")[1] == "200"
    )
    if not durations:
        raise RuntimeError(f"h2load logged no successful request:\n{out}")
    return {
        "req/s": rps,
        "p50 ms": durations[len(durations) // 2],
        "p99 ms": durations[min(len(durations) - 1, int(len(durations) * 0.99))],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="tunnelkit-edgebench-") as tmp:
        work = Path(tmp)
        group = ProcessGroup(work / "logs")
        try:
            async with nginx(work, {"index.html": b"hello from nginx\n" * 4}) as web:
                ca = make_ca(work, "bench CA")
                cert, key = make_leaf(ca, work, [HOST])
                (work / "frps.toml").write_text(
                    'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
                    f'vhostHTTPSPort = 0\nstateDir = "{work}/server"\n'
                    f'[[tls.certificates]]\ncertFile = "{cert}"\nkeyFile = "{key}"\n'
                )
                server = await group.start_tunnel("tunneld", ["-c", str(work / "frps.toml")])
                control = await server.control_address()
                http = await server.http_vhost_address()
                https = await server.https_vhost_address()
                fingerprint = await server.fingerprint()
                (work / "frpc.toml").write_text(
                    f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                    f'stateDir = "{work}/client"\ninspect.enabled = false\n'
                    f'transport.tls.serverFingerprint = "{fingerprint}"\n'
                    f'[[proxies]]\nname = "web"\ntype = "http"\nlocalPort = {web.port}\n'
                    f'customDomains = ["{HOST}"]\n'
                )
                client = await group.start_tunnel("tunnelc", ["-c", str(work / "frpc.toml")])
                await client.proxy_endpoint("web")
                cases = {
                    "direct (nginx, h1)": (f"http://{HOST}/index.html", web.port, True, 1),
                    "vhost HTTP (h1)": (f"http://{HOST}/index.html", http.port, True, 1),
                    "edge HTTPS (h1)": (f"https://{HOST}/index.html", https.port, True, 1),
                    "edge HTTPS (h2, 4 streams/conn)": (
                        f"https://{HOST}/index.html",
                        https.port,
                        False,
                        4,  # h2 streams reuse idle upstream tunnel streams (edge/upstreams.py)
                    ),
                }
                for run in range(args.runs):
                    for name, (url, port, h1, streams) in cases.items():
                        log = work / f"run{run}-{len(rows.get(name, []))}.log"
                        result = await h2load(url, port, args, log, h1=h1, streams=streams)
                        rows.setdefault(name, []).append(result)
        finally:
            await group.aclose()
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"\nHTTPS edge benchmark (h2load -c{args.clients} -t2 -D{args.seconds}; "
        f"median of {args.runs})\n"
    )
    keys = ["req/s", "p50 ms", "p99 ms"]
    print("| path | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    medians = {
        name: {k: statistics.median(r[k] for r in runs) for k in keys}
        for name, runs in rows.items()
    }
    for name, row in medians.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    plain = medians["vhost HTTP (h1)"]
    for name in ("edge HTTPS (h1)", "edge HTTPS (h2, 4 streams/conn)"):
        row = medians[name]
        print(f"| {name} / vhost HTTP | " + " | ".join(f"{row[k] / plain[k]:.2f}" for k in keys))


if __name__ == "__main__":
    asyncio.run(main())
