"""stcp benchmark: a secret proxy reached through a visitor, beside a tcp proxy, in one run.

    .venv/bin/python bench/stcp_bench.py [--seconds 5] [--runs 3] [--conns 300]

One tunneld, one tunnelc owning a tcp proxy and an stcp proxy for each service (an iperf3
sink and an echo server), and a second tunnelc with stcp visitors of both. The stcp path is
visitor -> tunnelc B -> tunneld -> tunnelc A -> service: two TLS sessions and a join in
tunneld, where the tcp path has one session. Measures, per path, iperf3 throughput with 1 and
8 streams (MB/s, median of --runs) and sequential connect + 1-byte echo + close (conn/s,
p50/p99). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tcp_bench import LoadGen, measure  # noqa: E402

from tests.support.peers import iperf3_server  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402

SECRET = "bench-secret"


def _head(work: Path, name: str, port: int, fingerprint: str) -> str:
    return (
        f'serverAddr = "127.0.0.1"\nserverPort = {port}\nstateDir = "{work}/{name}"\n'
        f'user = "{name}"\ntransport.tls.serverFingerprint = "{fingerprint}"\n'
    )


def _owner(sink: int, echo: int) -> str:
    out = ""
    for name, port in (("sink", sink), ("echo", echo)):
        out += f'[[proxies]]\nname = "{name}"\ntype = "tcp"\nlocalPort = {port}\nremotePort = 0\n'
        out += (
            f'[[proxies]]\nname = "s{name}"\ntype = "stcp"\nlocalPort = {port}\n'
            f'secretKey = "{SECRET}"\nallowUsers = ["guest"]\n'
        )
    return out


def _visitors() -> str:
    return "".join(
        f'[[visitors]]\nname = "to-{name}"\ntype = "stcp"\nserverName = "s{name}"\n'
        f'serverUser = "owner"\n'
        f'secretKey = "{SECRET}"\nbindPort = 0\n'
        for name in ("sink", "echo")
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per iperf3 run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--conns", type=int, default=300)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tunnelkit-bench-") as tmp:
        work = Path(tmp)
        gen, ports = await LoadGen.start()
        group = ProcessGroup(work / "logs")
        try:
            async with iperf3_server(work) as iperf:
                sink, echo = iperf.port, ports["echo"]
                results["direct"] = await measure(gen, sink, echo, args)
                frps = work / "frps.toml"
                frps.write_text(f'bindAddr = "127.0.0.1"\nbindPort = 0\nstateDir = "{work}/s"\n')
                server = await group.start_tunnel("tunneld", ["-c", str(frps)])
                port = (await server.control_address()).port
                fingerprint = await server.fingerprint()
                owner_toml = work / "owner.toml"
                owner_toml.write_text(_head(work, "owner", port, fingerprint) + _owner(sink, echo))
                owner = await group.start_tunnel("tunnelc", ["-c", str(owner_toml)])
                t_sink = (await owner.proxy_endpoint("sink")).port
                t_echo = (await owner.proxy_endpoint("echo")).port
                results["tcp proxy"] = await measure(gen, t_sink, t_echo, args)
                guest_toml = work / "guest.toml"
                guest_toml.write_text(_head(work, "guest", port, fingerprint) + _visitors())
                guest = await group.start_tunnel("tunnelc", ["-c", str(guest_toml)])
                await guest.wait_for(re.compile(r"tunnelc: logged in to "))
                bound = {}
                for name in ("sink", "echo"):
                    line = await guest.wait_for(
                        re.compile(rf"visitor to-{name} listening on tcp://127\.0\.0\.1:(\d+)")
                    )
                    bound[name] = int(line[1])
                results["stcp visitor"] = await measure(gen, bound["sink"], bound["echo"], args)
        finally:
            await group.aclose()
            await gen.close()
    report(results, args)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    keys = list(results["direct"])
    print(
        f"\nstcp benchmark (iperf3 -t {args.seconds}, -P 1 and -P 8, median of {args.runs}; "
        f"{args.conns} sequential connections)\n"
    )
    print("| path | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in keys) + " |")
    tcp, stcp = results["tcp proxy"], results["stcp visitor"]
    print("\n| ratio | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    print("| stcp / tcp proxy | " + " | ".join(f"{stcp[k] / tcp[k]:.2f}" for k in keys) + " |")


if __name__ == "__main__":
    asyncio.run(main())
