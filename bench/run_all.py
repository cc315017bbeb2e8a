"""tunnelkit side by side with a direct connection and `ssh -R`, in one run.

    .venv/bin/python -m bench.run_all [--seconds 5] [--runs 3] [--write BENCHMARKS.md]
    .venv/bin/python -m bench.run_all --quick --check     # the CI smoke run (under a minute)

Paths (bench/sidebyside.py): direct, `ssh -R` with aes128-gcm, `ssh -tt -R` (a pty, so ssh
sets TCP_NODELAY), and tunnelkit (TLS). Metrics, each the median of --runs, the paths taking
turns run by run so that a change of load on the shared machine hits them all alike:
- TCP: one iperf3 stream (MB/s);
- HTTP: `wrk -t2 -c50 --latency` against nginx with one worker, through a tcp proxy and
  through the HTTP vhost (req/s, p99 ms);
- new connections per second: --conns sequential connect, 1-byte echo, close;
- UDP: `iperf3 -u -b 0 -l 1400` (MB/s received);
- UDP fairness: while iperf3 floods one flow, another flow's ping round trip (p99 ms);
- the peak RSS (VmHWM) of tunneld and tunnelc, and of the ssh client and its sshd processes;
- the highest RSS of tunneld and tunnelc while the steps run (sampled every 50 ms), and their
  RSS when idle, before the steps.

Prints the tables and the ratios; `--write` replaces the generated section of BENCHMARKS.md
(between RUN_ALL_BEGIN and RUN_ALL_END), keeping everything else; `--check` exits 1 if a
ratio falls below its floor in SMOKE_FLOORS (about half of what this machine measures, so a
2x regression fails and noise does not). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http_bench import _ms  # noqa: E402
from bench.sidebyside import (  # noqa: E402
    VHOST_NAME,
    Path_,
    Targets,
    child_named,
    direct,
    peak_rss_kib,
    rss_kib,
    ssh_path,
    tunnel_path,
)
from bench.tcp_bench import LoadGen  # noqa: E402
from tests.support.peers import iperf3_server, nginx, run_command, sshd  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402

RUN_ALL_BEGIN: Final = "<!-- bench/run_all.py: generated section begins -->"
RUN_ALL_END: Final = "<!-- bench/run_all.py: generated section ends -->"
UDP_DATAGRAM_BYTES: Final = 1400
PING_INTERVAL_MS: Final = 2.0  # between one ping's answer and the next ping
FLOOD_HEAD_START_S: Final = 0.5  # the flood runs this long before the pings start
IPERF_ATTEMPTS: Final = 2
IPERF_RETRY_PAUSE_S: Final = 1.0
TOOL_SLACK_S: Final = 30  # a tool run may take this much longer than its duration
RSS_SAMPLE_INTERVAL_S: Final = 0.05  # how often the resident sets are read during the steps
PROFILE_RATE_HZ: Final = 200  # py-spy samples per second with --profile
PROFILE_SLACK_S: Final = 5  # py-spy records at most the tool's duration plus this
# The --check floors: (metric, numerator path, denominator path, floor). About half of what
# this 2-core machine measures, so that a 2x regression fails the build and noise does not.
TK, GCM, PTY = "tunnelkit", "ssh -R aes-gcm", "ssh -tt -R (pty)"
Ratio = tuple[str, tuple[str, str], tuple[str, str]]  # label, (path, metric) / (path, metric)
RATIOS: Final[tuple[Ratio, ...]] = (
    ("TCP 1 stream / ssh aes-gcm", (TK, "TCP MB/s"), (GCM, "TCP MB/s")),
    ("TCP 1 stream / direct", (TK, "TCP MB/s"), ("direct", "TCP MB/s")),
    ("HTTP tcp proxy / ssh pty", (TK, "HTTP tcp req/s"), (PTY, "HTTP tcp req/s")),
    ("HTTP tcp proxy / ssh aes-gcm", (TK, "HTTP tcp req/s"), (GCM, "HTTP tcp req/s")),
    ("HTTP vhost / tcp proxy", (TK, "HTTP vhost req/s"), (TK, "HTTP tcp req/s")),
    ("HTTP tcp proxy CPU / vhost CPU", (TK, "HTTP tcp CPU us/req"), (TK, "HTTP vhost CPU us/req")),
    ("conn/s / ssh pty", (TK, "conn/s"), (PTY, "conn/s")),
    ("conn/s / direct", (TK, "conn/s"), ("direct", "conn/s")),
    ("UDP / direct", (TK, "UDP MB/s"), ("direct", "UDP MB/s")),
)
SMOKE_FLOORS: Final = {
    "TCP 1 stream / ssh aes-gcm": 0.25,
    "HTTP tcp proxy / ssh pty": 0.3,
    "HTTP vhost / tcp proxy": 0.15,
    "conn/s / ssh pty": 0.25,
    "UDP / direct": 0.05,
}
# The targets (#12): (label, ratio label or (path, metric), at least, at most).
TARGETS: Final = (
    ("vhost >= 0.9x the tcp proxy", "HTTP vhost / tcp proxy", 0.9, None),
    ("vhost p99 <= 5 ms", (TK, "HTTP vhost p99 ms"), None, 5.0),
    ("tcp proxy >= 0.8x ssh pty", "HTTP tcp proxy / ssh pty", 0.8, None),
    ("TCP >= 0.8x ssh aes-gcm", "TCP 1 stream / ssh aes-gcm", 0.8, None),
    ("conn/s >= ssh pty", "conn/s / ssh pty", 1.0, None),
    ("UDP >= 100 MB/s", (TK, "UDP MB/s"), 100.0, None),
    ("quiet flow p99 < 5 ms under a flood", (TK, "UDP ping p99 ms (flood)"), None, 5.0),
    ("tunneld RSS under load <= 40 MiB", (TK, "tunneld RSS under load MiB"), None, 40.0),
    ("tunnelc RSS under load <= 40 MiB", (TK, "tunnelc RSS under load MiB"), None, 40.0),
    ("tunneld peak RSS (VmHWM) <= 40 MiB", (TK, "tunneld peak RSS MiB"), None, 40.0),
    ("tunnelc peak RSS (VmHWM) <= 40 MiB", (TK, "tunnelc peak RSS MiB"), None, 40.0),
    ("tunneld idle RSS <= 30 MiB", (TK, "tunneld idle RSS MiB"), None, 30.0),
    ("tunnelc idle RSS <= 30 MiB", (TK, "tunnelc idle RSS MiB"), None, 30.0),
)
SMOKE_MAX_PEAK_RSS_MIB: Final = 260.0  # tunneld + tunnelc; about twice what they use now


class Bench:
    def __init__(self, args: argparse.Namespace, gen: LoadGen) -> None:
        self.args = args
        self.gen = gen
        self.results: dict[str, dict[str, list[float]]] = {}  # path -> metric -> runs

    def add(self, path: str, metric: str, value: float) -> None:
        self.results.setdefault(path, {}).setdefault(metric, []).append(value)

    def median(self, path: str, metric: str) -> float:
        runs = self.results.get(path, {}).get(metric)
        return statistics.median(runs) if runs else math.nan

    async def take_turns(
        self, paths: list[Path_], measure: Callable[[Path_], Awaitable[None]]
    ) -> None:
        for _ in range(self.args.runs):
            for path in paths:
                if self.args.profile is not None and path.name == TK:
                    step = measure.__name__
                    async with profiled(path.pids, self.args.profile, step, self.args.seconds):
                        await measure(path)
                else:
                    await measure(path)

    # -- the measurements ---------------------------------------------------------------------
    async def _iperf(self, argv: list[str]) -> dict[str, Any]:
        """Run iperf3 --json; one retry if it reports an error (a busy server, under load)."""
        error = ""
        for _ in range(IPERF_ATTEMPTS):
            try:
                result: dict[str, Any] = json.loads(await self._tool(argv))
            except AssertionError as exc:  # a non-zero exit: run_command quotes the output
                error = str(exc)[-500:]
            else:
                error = result.get("error", "")
                if not error:
                    return result
            await asyncio.sleep(IPERF_RETRY_PAUSE_S)  # let the server finish the failed test
        raise RuntimeError(f"iperf3 failed {IPERF_ATTEMPTS} times: {error}")

    async def tcp(self, path: Path_) -> None:
        out = await self._iperf(["iperf3", "-c", "127.0.0.1", "-p", str(path.tcp_sink), "--json"])
        end = out["end"]["sum_received"]
        self.add(path.name, "TCP MB/s", end["bytes"] / end["seconds"] / 1e6)

    async def http(self, path: Path_) -> None:
        before = proc_counters(path.pids)
        out = await self._wrk(path.http, "127.0.0.1")
        self._wrk_result(path, "HTTP tcp", out, before)

    async def vhost(self, path: Path_) -> None:
        assert path.vhost is not None
        before = proc_counters(path.pids)
        out = await self._wrk(path.vhost, VHOST_NAME)
        self._wrk_result(path, "HTTP vhost", out, before)

    async def conns(self, path: Path_) -> None:
        count = self.args.conns if "gcm" not in path.name else self.args.conns // 5  # 30/s
        result = await self.gen.run(op="connect", port=path.echo, count=count)
        self.add(path.name, "conn/s", result["per_s"])

    async def udp(self, path: Path_) -> None:
        assert path.udp is not None
        before = cpu_seconds(path.pids)
        out = await self._iperf(_iperf_udp(path.udp, self.args.seconds))
        cpu_s = cpu_seconds(path.pids) - before
        summary = out["end"]["sum"]
        received = summary["bytes"] * (1 - summary["lost_percent"] / 100)
        self.add(path.name, "UDP MB/s", received / summary["seconds"] / 1e6)
        delivered = summary["packets"] - summary["lost_packets"]
        if cpu_s > 0 and delivered > 0:
            # CPU of the tunnel's processes per delivered datagram (drops included in the work).
            self.add(path.name, "UDP CPU us/datagram", cpu_s / delivered * 1e6)

    async def fairness(self, path: Path_) -> None:
        """One flow floods (iperf3 -u -b 0) while another flow's pings are timed."""
        assert path.udp is not None and path.udp_echo is not None
        seconds = self.args.seconds
        flood = asyncio.ensure_future(self._iperf(_iperf_udp(path.udp, seconds + 1)))
        try:
            await asyncio.sleep(FLOOD_HEAD_START_S)  # a head start for the flood, not a sync
            count = int(seconds * 1000 / (PING_INTERVAL_MS + 1))
            before, started = proc_counters(path.pids), time.monotonic()
            pings = await self.gen.run(
                op="udp_ping", port=path.udp_echo, count=count, interval_ms=PING_INTERVAL_MS
            )
            after, elapsed = proc_counters(path.pids), time.monotonic() - started
            self.add(path.name, "UDP ping p99 ms (flood)", pings["p99_ms"])
            self.add(path.name, "UDP ping lost (flood)", pings["lost"])
            # How busy each tunnel process was during the flood: a process at a full core
            # answers a quiet flow's datagram only when the scheduler gives it its turn.
            for name in after.keys() & before.keys():
                busy = (after[name][0] - before[name][0]) / elapsed * 100
                self.add(path.name, f"{name} CPU % (flood)", busy)
        finally:
            await flood
        quiet = await self.gen.run(
            op="udp_ping", port=path.udp_echo, count=200, interval_ms=PING_INTERVAL_MS
        )
        self.add(path.name, "UDP ping p99 ms (quiet)", quiet["p99_ms"])

    # -- tools --------------------------------------------------------------------------------
    async def _tool(self, argv: list[str]) -> str:
        return await run_command(
            [*argv, "-t", str(self.args.seconds)] if argv[0] == "iperf3" and "-t" not in argv
            else argv,
            timeout_s=self.args.seconds + TOOL_SLACK_S,
        )  # fmt: skip

    async def _wrk(self, port: int, host: str) -> str:
        return await self._tool(
            ["wrk", "-t2", "-c50", f"-d{self.args.seconds}s", "--latency",
             "-H", f"Host: {host}", f"http://127.0.0.1:{port}/index.html"]
        )  # fmt: skip

    def _wrk_result(
        self, path_: Path_, kind: str, out: str, before: dict[str, tuple[float, int]]
    ) -> None:
        path = path_.name
        after = proc_counters(path_.pids)
        cpu_s = sum(after[n][0] - before[n][0] for n in after if n in before)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", out)
        # wrk's own 2 s timeouts are slow answers on a loaded machine, not failures.
        if errors or (sockets is not None and any(int(n) for n in sockets.groups())):
            raise RuntimeError(f"wrk saw errors through {path} ({kind}):\n{out}")
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p99 = re.search(r"\s99%\s+(\S+)", out)
        if rps is None or p99 is None:
            raise RuntimeError(f"cannot read wrk's output:\n{out}")
        self.add(path, f"{kind} req/s", float(rps[1]))
        self.add(path, f"{kind} p99 ms", _ms(p99[1]))
        total = re.search(r"(\d+) requests in", out)
        if cpu_s > 0 and total is not None:
            # CPU of the tunnel's processes per request: steadier than req/s on a busy machine.
            requests = int(total[1])
            self.add(path, f"{kind} CPU us/req", cpu_s / requests * 1e6)
            if path == TK:  # per process: where the CPU and the minor page faults go
                for name in ("tunneld", "tunnelc"):
                    if name in after and name in before:
                        cpu = after[name][0] - before[name][0]
                        faults = after[name][1] - before[name][1]
                        self.add(path, f"{kind} {name} CPU us/req", cpu / requests * 1e6)
                        self.add(path, f"{kind} {name} faults/req", faults / requests)


@contextlib.asynccontextmanager
async def profiled(pids: dict[str, int], out: Path, step: str, seconds: int) -> AsyncIterator[None]:
    """Sample these processes with py-spy (raw collapsed stacks, one file per process and
    step, appended run after run) while the block runs; bounded by --seconds plus slack.
    PYSPY_OPTIONS in the environment replaces `--nonblocking` (e.g. `--native`)."""
    _make_dir(out)
    options = os.environ.get("PYSPY_OPTIONS", "--nonblocking").split()
    procs = []
    for name, pid in pids.items():
        target = out / f"{step}-{name}.txt"
        argv = [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid),
                "-r", str(PROFILE_RATE_HZ), "-f", "raw", *options,
                "-d", str(seconds + PROFILE_SLACK_S), "-o", str(target) + ".run"]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append((proc, target))
    try:
        yield
    finally:
        for proc, target in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), TOOL_SLACK_S)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            _append_run(target)


@contextlib.asynccontextmanager
async def sampled_rss(pids: dict[str, int]) -> AsyncIterator[dict[str, int]]:
    """The highest VmRSS of each process (KiB), sampled every RSS_SAMPLE_INTERVAL_S while the
    block runs: the resident set under load. VmHWM (peak RSS MiB) also counts start-up, whose
    high point is the login's scrypt (16 MiB for a few tens of milliseconds, protocol/auth.py)."""
    highest = dict.fromkeys(pids, 0)

    async def sample() -> None:
        while True:
            for name, pid in pids.items():
                highest[name] = max(highest[name], rss_kib(pid))
            await asyncio.sleep(RSS_SAMPLE_INTERVAL_S)

    task = asyncio.create_task(sample())
    try:
        yield highest
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _append_run(target: Path) -> None:
    """Append py-spy's output of one run (TARGET.run) to TARGET."""
    run = Path(str(target) + ".run")
    if run.exists():
        with target.open("a") as sink:
            sink.write(run.read_text())
        run.unlink()


def proc_counters(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    """Per process: user + system CPU seconds and minor page faults so far (Linux /proc)."""
    found: dict[str, tuple[float, int]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[name] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[7]))
    return found


def cpu_seconds(pids: dict[str, int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc); 0 for none."""
    total = 0.0
    for pid in pids.values():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _iperf_udp(port: int, seconds: int) -> list[str]:
    return [
        "iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-b", "0",
        "-l", str(UDP_DATAGRAM_BYTES), "-t", str(seconds), "--json",
    ]  # fmt: skip


async def run(args: argparse.Namespace) -> Bench:
    with tempfile.TemporaryDirectory(prefix="tunnelkit-runall-") as tmp:
        work = Path(tmp)
        gen, ports = await LoadGen.start()
        group = ProcessGroup(work / "logs")
        stack = contextlib.AsyncExitStack()
        bench = Bench(args, gen)
        try:
            iperf = await stack.enter_async_context(iperf3_server(work))
            web = await stack.enter_async_context(
                nginx(work, {"index.html": b"hello from nginx\n" * 4})
            )
            targets = Targets(iperf.port, ports["echo"], web.port, ports["udp_echo"])
            plain = direct(targets)
            tunnel = await tunnel_path(group, work, targets)
            paths = [plain, tunnel]
            if not args.no_ssh:
                ssh_server = await stack.enter_async_context(sshd(work))
                sshd_pid = child_named(os.getpid(), "sshd")
                paths[1:1] = [
                    await ssh_path(group, ssh_server, sshd_pid, targets, pty=False),
                    await ssh_path(group, ssh_server, sshd_pid, targets, pty=True),
                ]
            udp_paths = [plain, tunnel]
            # Before any load: the idle footprint (added to the results after the steps, so
            # that the paths keep their order in the tables).
            idle = {name: rss_kib(pid) / 1024 for name, pid in tunnel.pids.items()}
            bench.add("run", "load average at start", os.getloadavg()[0])
            started = time.monotonic()
            steps = {
                "tcp": (paths, bench.tcp),
                "http": (paths, bench.http),
                "vhost": ([tunnel], bench.vhost),
                "conns": (paths, bench.conns),
                "udp": (udp_paths, bench.udp),
                "fairness": (udp_paths, bench.fairness),
            }
            async with sampled_rss(tunnel.pids) as under_load:
                for step, (where, measure) in steps.items():
                    if not args.only or step in args.only:
                        await bench.take_turns(where, measure)
            for path in paths[1:]:
                total = sum(peak_rss_kib(pid) for pid in path.pids.values())
                bench.add(path.name, "peak RSS MiB", total / 1024)
            for name, pid in tunnel.pids.items():
                bench.add(tunnel.name, f"{name} peak RSS MiB", peak_rss_kib(pid) / 1024)
            for name, kib in under_load.items():
                bench.add(tunnel.name, f"{name} RSS under load MiB", kib / 1024)
            for name, mib in idle.items():
                bench.add(tunnel.name, f"{name} idle RSS MiB", mib)
            bench.add("run", "seconds", time.monotonic() - started)
            bench.add("run", "load average at end", os.getloadavg()[0])
        finally:
            await group.aclose()
            await stack.aclose()
            await gen.close()
    return bench


# -- reporting ---------------------------------------------------------------------------------
ROWS: Final = (
    "TCP MB/s", "HTTP tcp req/s", "HTTP tcp p99 ms", "HTTP tcp CPU us/req",
    "HTTP tcp tunneld CPU us/req", "HTTP tcp tunnelc CPU us/req",
    "HTTP tcp tunneld faults/req", "HTTP tcp tunnelc faults/req",
    "HTTP vhost req/s", "HTTP vhost p99 ms", "HTTP vhost CPU us/req",
    "HTTP vhost tunneld CPU us/req", "HTTP vhost tunnelc CPU us/req",
    "HTTP vhost tunneld faults/req", "HTTP vhost tunnelc faults/req",
    "conn/s", "UDP MB/s", "UDP CPU us/datagram", "UDP ping p99 ms (flood)", "UDP ping lost (flood)",
    "tunneld CPU % (flood)", "tunnelc CPU % (flood)", "UDP ping p99 ms (quiet)",
    "peak RSS MiB", "tunneld peak RSS MiB", "tunnelc peak RSS MiB",
    "tunneld RSS under load MiB", "tunnelc RSS under load MiB",
    "tunneld idle RSS MiB", "tunnelc idle RSS MiB",
)  # fmt: skip


def ratios(bench: Bench) -> dict[str, float]:
    return {label: bench.median(*top) / bench.median(*bottom) for label, top, bottom in RATIOS}


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def report(bench: Bench, command: str) -> str:
    args = bench.args
    paths = [p for p in bench.results if p != "run"]
    lines = [
        "```",
        command,
        "```",
        "",
        f"Median of {args.runs} (paths taking turns); tools run {args.seconds} s each; "
        f"{args.conns} sequential connections ({args.conns // 5} through ssh aes-gcm, which "
        f"opens about 30 per second); the whole run took {bench.median('run', 'seconds'):.0f} s.",
        "",
        f"Machine load (1-minute load average on 2 cores shared with other jobs): "
        f"{bench.median('run', 'load average at start'):.1f} at the start, "
        f"{bench.median('run', 'load average at end'):.1f} at the end.",
        "",
        "| metric | " + " | ".join(paths) + " |",
        "|---|" + "---|" * len(paths),
    ]
    for row in ROWS:
        values = [bench.median(path, row) for path in paths]
        if all(math.isnan(v) for v in values):
            continue
        lines.append(f"| {row} | " + " | ".join(_fmt(v) for v in values) + " |")
    found = ratios(bench)
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| tunnelkit {label} | {value:.2f} |" for label, value in found.items()]
    lines += ["", "| target (issue #12) | measured | met |", "|---|---|---|"]
    for label, source, low, high in TARGETS:
        value = found[source] if isinstance(source, str) else bench.median(*source)
        met = not math.isnan(value) and (low is None or value >= low)
        met = met and (high is None or value <= high)
        lines.append(f"| {label} | {_fmt(value)} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def check(bench: Bench) -> list[str]:
    """The smoke floors that were not reached (empty when all were)."""
    found = ratios(bench)
    failures = [
        f"{label}: {found[label]:.2f} is below its floor {floor}"
        for label, floor in SMOKE_FLOORS.items()
        if not found[label] >= floor  # NaN (not measured) fails too
    ]
    rss = bench.median(TK, "peak RSS MiB")
    if not rss <= SMOKE_MAX_PEAK_RSS_MIB:
        failures.append(f"peak RSS {rss:.1f} MiB is above {SMOKE_MAX_PEAK_RSS_MIB} MiB")
    return failures


def write_section(target: Path, text: str) -> None:
    """Replace the generated section of `target`, or append one; keep everything else."""
    body = target.read_text() if target.exists() else "# Benchmarks\n"
    section = (
        f"{RUN_ALL_BEGIN}\n## Side by side with ssh -R (bench/run_all.py)\n\n{text}\n{RUN_ALL_END}"
    )
    if RUN_ALL_BEGIN in body and RUN_ALL_END in body:
        head, rest = body.split(RUN_ALL_BEGIN, 1)
        tail = rest.split(RUN_ALL_END, 1)[1]
        body = head + section + tail
    else:
        body = body.rstrip("\n") + "\n\n" + section + "\n"
    target.write_text(body)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each tool run")
    parser.add_argument("--runs", type=int, default=3, help="runs per path (the median)")
    parser.add_argument("--conns", type=int, default=500, help="sequential connections")
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s, 200 connections")
    parser.add_argument("--no-ssh", action="store_true", help="skip the ssh paths")
    parser.add_argument("--check", action="store_true", help="fail below the smoke floors")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(),
        help="comma-separated steps: tcp,http,vhost,conns,udp,fairness (default: all)",
    )
    parser.add_argument("--write", type=Path, help="update the generated section of this file")
    parser.add_argument("--json", type=Path, help="write every run's values here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample tunneld and tunnelc with py-spy during each tunnelkit run (a directory "
        "of raw stacks; summarise with python -m bench.profile_summary)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.runs, args.conns = 2, 1, 200
    if args.seconds < 1 or args.runs < 1 or args.conns < 5:
        parser.error("--seconds and --runs must be at least 1, --conns at least 5")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = asyncio.run(run(args))
    command = "python -m bench.run_all " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(bench, command.strip())
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(bench.results, indent=1))
    if args.write is not None:
        write_section(args.write, text)
    if args.check:
        failures = check(bench)
        for failure in failures:
            print(f"bench smoke: {failure}", file=sys.stderr)
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
