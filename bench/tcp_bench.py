"""TCP benchmark: tunnelkit (TLS) beside a direct connection and `ssh -N -R`, in one run.

    .venv/bin/python bench/tcp_bench.py [--mib 1024] [--runs 3] [--conns 300]

Measures, for each path (direct, tunnelkit, ssh -R):
- throughput with 1 stream and with 8 streams (MB/s, median of --runs), with iperf3 (written
  in C, so on 2 cores the load generator takes little CPU from what is measured);
- connection setup: sequential connect + 1-byte echo + close (conn/s, p50/p99 latency);
- the RSS of tunneld/tunnelc (and sshd/ssh) after the run.
Prints a markdown table with the ratios to direct and to ssh. Traffic stays on 127.0.0.1.
The load generator and the sink/echo servers run in a separate process (threads, blocking
sockets) so they do not share an event loop with anything measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.peers import iperf3_server, run_command, sshd  # noqa: E402
from tests.support.procs import LoggedProcess, ProcessGroup  # noqa: E402

LOADGEN = Path(__file__).with_name("loadgen.py")
MiB = 1 << 20


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class LoadGen:
    """The load generator process: one JSON command per line in, one JSON result out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> tuple[LoadGen, dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(LOADGEN),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        gen = cls(proc)
        ports = await gen._read()
        return gen, ports

    async def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(600):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("load generator exited")
        result: dict[str, Any] = json.loads(line)
        return result

    async def run(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read()

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        async with asyncio.timeout(10):
            await self.proc.wait()


async def iperf_mbps(port: int, streams: int, args: argparse.Namespace) -> float:
    out = await run_command(
        ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(args.seconds),
         "-P", str(streams), "--json"],
        timeout_s=args.seconds + 30,
    )  # fmt: skip
    if "sum_received" not in json.loads(out)["end"]:
        raise RuntimeError(f"iperf3 failed: {json.loads(out).get('error', out[-500:])}")
    received: float = json.loads(out)["end"]["sum_received"]["bytes"]
    seconds: float = json.loads(out)["end"]["sum_received"]["seconds"]
    return received / seconds / 1e6


async def measure(gen: LoadGen, sink: int, echo: int, args: argparse.Namespace) -> dict[str, Any]:
    one = [await iperf_mbps(sink, 1, args) for _ in range(args.runs)]
    eight = [await iperf_mbps(sink, 8, args) for _ in range(args.runs)]
    setup = await gen.run(op="connect", port=echo, count=args.conns)
    return {
        "1 stream MB/s": statistics.median(one),
        "8 streams MB/s": statistics.median(eight),
        "conn/s": setup["per_s"],
        "connect p50 ms": setup["p50_ms"],
        "connect p99 ms": setup["p99_ms"],
    }


async def start_tunnel(
    group: ProcessGroup, work: Path, sink: int, echo: int
) -> tuple[int, int, list[LoggedProcess]]:
    server = await group.start_tunnel(
        "tunneld", ["-c", str(_write(work / "frps.toml", _server_toml(work)))]
    )
    control = await server.control_address()
    fingerprint = await server.fingerprint()
    client_toml = _client_toml(work, control.port, fingerprint, sink, echo)
    client = await group.start_tunnel(
        "tunnelc", ["-c", str(_write(work / "frpc.toml", client_toml))]
    )
    sink_pub = await client.proxy_endpoint("sink")
    echo_pub = await client.proxy_endpoint("echo")
    return sink_pub.port, echo_pub.port, [server, client]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _server_toml(work: Path) -> str:
    return f'bindAddr = "127.0.0.1"\nbindPort = 0\nstateDir = "{work}/server"\n'


def _client_toml(work: Path, port: int, fingerprint: str, sink: int, echo: int) -> str:
    return (
        f'serverAddr = "127.0.0.1"\nserverPort = {port}\nstateDir = "{work}/client"\n'
        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
        f'[[proxies]]\nname = "sink"\ntype = "tcp"\nlocalPort = {sink}\nremotePort = 0\n'
        f'[[proxies]]\nname = "echo"\ntype = "tcp"\nlocalPort = {echo}\nremotePort = 0\n'
    )


async def start_ssh(
    group: ProcessGroup, server_port: int, key: Path, target: int, name: str
) -> tuple[int, LoggedProcess]:
    argv = [
        "ssh", "-N", "-F", "/dev/null", "-i", str(key),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
        "-R", f"127.0.0.1:0:127.0.0.1:{target}", "-p", str(server_port), "root@127.0.0.1",
    ]  # fmt: skip
    proc = await group.start(argv, name=name, expect_exit_code=None)
    match = await proc.wait_for(re.compile(r"Allocated port (\d+) for remote forward"), 20)
    return int(match.group(1)), proc


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per iperf3 run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--conns", type=int, default=300)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    rss: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tunnelkit-bench-") as tmp:
        work = Path(tmp)
        gen, ports = await LoadGen.start()
        group = ProcessGroup(work / "logs")
        stack = contextlib.AsyncExitStack()
        try:
            iperf = await stack.enter_async_context(iperf3_server(work))
            sink = iperf.port
            echo = ports["echo"]
            results["direct"] = await measure(gen, sink, echo, args)
            t_sink, t_echo, procs = await start_tunnel(group, work, sink, echo)
            results["tunnelkit (TLS)"] = await measure(gen, t_sink, t_echo, args)
            rss["tunneld"] = rss_kib(procs[0].pid)
            rss["tunnelc"] = rss_kib(procs[1].pid)
            async with sshd(work) as ssh_server:
                s_sink, p1 = await start_ssh(
                    group, ssh_server.port, ssh_server.client_key, sink, "ssh-sink"
                )
                s_echo, p2 = await start_ssh(
                    group, ssh_server.port, ssh_server.client_key, echo, "ssh-echo"
                )
                results["ssh -N -R"] = await measure(gen, s_sink, s_echo, args)
                rss["ssh client (x2)"] = rss_kib(p1.pid) + rss_kib(p2.pid)
        finally:
            await group.aclose()
            await stack.aclose()
            await gen.close()
    report(results, rss, args)


def report(
    results: dict[str, dict[str, Any]], rss: dict[str, int], args: argparse.Namespace
) -> None:
    direct = results["direct"]
    ssh = results.get("ssh -N -R")
    keys = list(direct)
    print(
        f"\nTCP benchmark (iperf3 -t {args.seconds}, -P 1 and -P 8, median of {args.runs}; "
        f"{args.conns} sequential connections)\n"
    )
    print("| path | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in keys) + " |")
    tunnel = results["tunnelkit (TLS)"]
    print("\n| ratio | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    print(
        "| tunnelkit / direct | " + " | ".join(f"{tunnel[k] / direct[k]:.2f}" for k in keys) + " |"
    )
    if ssh:
        print("| tunnelkit / ssh | " + " | ".join(f"{tunnel[k] / ssh[k]:.2f}" for k in keys) + " |")
    print("\nRSS after the run: " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in rss.items()))


if __name__ == "__main__":
    asyncio.run(main())
