"""What the request inspector costs tunnelc, with its history and filters in use.

    .venv/bin/python bench/inspect_cost_bench.py [--seconds 5] [--rounds 7] [--profile DIR]

One nginx (a 68-byte static file), one tunneld and three tunnelc, each serving the same nginx
under its own vhost name:
- `off`:    `inspect.enabled = false`;
- `memory`: the inspector on, `inspect.history = false`, nobody looking;
- `history`: the inspector on with its SQLite history (the default), nobody looking;
- `full`:   the inspector on with its SQLite history, the page open on a
  filtered live view (`/api/events?method=GET&status=2xx&q=nginx`, the text search reaching
  into the response body) and a filtered list query (`/api/requests?...`) every 5 seconds.

Each round runs `wrk -t2 -c50` for `--seconds` against each variant in turn, the order rotated
from round to round, so drift on a shared machine (other jobs, CPU frequency) hits every
variant alike. Two measures per run:
- req/s, as wrk reports it;
- tunnelc's CPU time per request: the tunnelc process's utime + stime (all threads, from
  /proc/PID/stat) over the run, divided by the requests wrk completed. It does not depend on
  how the machine's two cores are shared out, so it is far steadier than req/s.

Reported: per variant the median and the range (min-max) over the rounds; and the costs as
ratios, both of the medians and as the median of each round's own ratio (a paired ratio,
which cancels drift between rounds), with its range. `--profile DIR` then samples the `full`
tunnelc with py-spy during one more run and writes the profile (speedscope JSON and the top
functions by own time) to DIR. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Final

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import cpu_seconds, follow_events, wrk  # noqa: E402
from tests.support.peers import nginx, run_command  # noqa: E402
from tests.support.procs import INSPECTOR_READY, ProcessGroup  # noqa: E402

LIVE_FILTER: Final = "method=GET&status=2xx&q=nginx"  # matches every exchange, body included
LIST_QUERY_INTERVAL_S: Final = 5.0  # a filtered list query, as when the page changes its filter
VARIANTS: Final = ("off", "memory", "history", "full")
PROFILE_TOP: Final = 25  # functions listed in the profile summary


async def query_list(url: str, answered: list[int]) -> None:
    """Ask for the filtered request list now and then, as a page does when its filter changes."""
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url) as response:
                response.raise_for_status()
                await response.read()
                answered[0] += 1
            await asyncio.sleep(LIST_QUERY_INTERVAL_S)


async def one_run(port: int, seconds: int, host: str, pid: int) -> dict[str, float]:
    args = argparse.Namespace(seconds=seconds)
    before = cpu_seconds(pid)
    run = await wrk(port, args, host)
    run["cpu s"] = cpu_seconds(pid) - before
    run["us/req"] = run["cpu s"] / run["requests"] * 1e6
    run["cpu share"] = run["cpu s"] / seconds  # of one core: near 1.0 means tunnelc-bound
    return run


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


async def profile(pid: int, port: int, host: str, seconds: int, out: Path) -> str:
    """Sample `pid` with py-spy during one wrk run; returns the top functions by own time."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    raw = out / "full.collapsed.txt"
    record = asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
        "--nonblocking", "--format", "raw", "--output", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    sampler = await record
    await one_run(port, seconds, host, pid)
    _, err = await sampler.communicate()
    if sampler.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = re.sub(r":\d+\)$", ")", stack.rsplit(";", 1)[-1])  # by function, not line
        own[leaf] += int(count)
        total += int(count)
    lines = [f"py-spy, tunnelc `full` under wrk -t2 -c50 -d{seconds}s: {total} samples"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(PROFILE_TOP)]
    summary = "\n".join(lines) + "\n"
    (out / "full.top.txt").write_text(summary)
    return summary


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", type=Path, help="also profile the `full` tunnelc into DIR")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    live_seen, lists_answered = [0], [0]
    summary = ""
    with tempfile.TemporaryDirectory(prefix="tunnelkit-inspectbench-") as tmp:
        work = Path(tmp)
        group = ProcessGroup(work / "logs")
        try:
            async with nginx(work, {"index.html": b"hello from nginx\n" * 4}) as web:
                (work / "frps.toml").write_text(
                    'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
                    f'stateDir = "{work}/server"\n'
                )
                server = await group.start_tunnel("tunneld", ["-c", str(work / "frps.toml")])
                control = await server.control_address()
                vhost = await server.http_vhost_address()
                fingerprint = await server.fingerprint()
                pids: dict[str, int] = {}
                inspector_port = 0
                for name in VARIANTS:
                    config = work / f"frpc-{name}.toml"
                    config.write_text(
                        f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                        f'stateDir = "{work}/client-{name}"\n'
                        f"inspect.enabled = {'false' if name == 'off' else 'true'}\n"
                        f"inspect.port = 0\n"
                        f"inspect.history = {'true' if name in ('history', 'full') else 'false'}\n"
                        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
                        f'[[proxies]]\nname = "{name}"\ntype = "http"\nlocalPort = {web.port}\n'
                        f'customDomains = ["{name}.example.test"]\n'
                    )
                    client = await group.start_tunnel("tunnelc", ["-c", str(config)])
                    await client.proxy_endpoint(name)
                    pids[name] = client.pid
                    if name == "full":
                        inspector_port = int((await client.wait_for(INSPECTOR_READY))["port"])
                base = f"http://127.0.0.1:{inspector_port}/api"
                watchers = [
                    asyncio.create_task(follow_events(f"{base}/events?{LIVE_FILTER}", live_seen)),
                    asyncio.create_task(
                        query_list(f"{base}/requests?{LIVE_FILTER}", lists_answered)
                    ),
                ]
                try:
                    await run_command(["true"])  # warm-up of the helper, not measured
                    for name in VARIANTS:  # warm each tunnelc (not measured)
                        await one_run(vhost.port, 1, f"{name}.example.test", pids[name])
                    for round_no in range(args.rounds):
                        shift = round_no % len(VARIANTS)
                        for name in VARIANTS[shift:] + VARIANTS[:shift]:
                            runs[name].append(
                                await one_run(
                                    vhost.port, args.seconds, f"{name}.example.test", pids[name]
                                )
                            )
                    if args.profile is not None:
                        summary = await profile(
                            pids["full"], vhost.port, "full.example.test", args.seconds,
                            args.profile,
                        )  # fmt: skip
                finally:
                    for watcher in watchers:
                        watcher.cancel()
                    results = await asyncio.gather(*watchers, return_exceptions=True)
                    for result in results:
                        if isinstance(result, Exception):
                            print(f"a page watcher failed: {result!r}")
        finally:
            await group.aclose()
    report(args, runs, live_seen[0], lists_answered[0])
    if summary:
        print("\n" + summary)


def report(
    args: argparse.Namespace, runs: dict[str, list[dict[str, float]]], live: int, lists: int
) -> None:
    print(
        f"\nInspector cost (wrk -t2 -c50 -d{args.seconds}s per run, {args.rounds} rounds, "
        "variants interleaved; median (min-max))\n"
    )
    print("| variant | req/s | tunnelc µs/req | tunnelc CPU share | p99 ms |")
    print("|---|---|---|---|---|")
    for name in VARIANTS:
        rows = runs[name]
        print(
            f"| {name} | {spread([r['req/s'] for r in rows], '.0f')} "
            f"| {spread([r['us/req'] for r in rows], '.1f')} "
            f"| {spread([r['cpu share'] for r in rows], '.2f')} "
            f"| {spread([r['p99 ms'] for r in rows], '.1f')} |"
        )
    print("\n| cost | req/s ratio (paired) | CPU/req ratio (paired) |")
    print("|---|---|---|")
    for label, num, den in (
        ("inspector in memory / off", "memory", "off"),
        ("inspector + history + filters / off", "full", "off"),
        ("history / inspector in memory", "history", "memory"),
        ("history + filters / inspector in memory", "full", "memory"),
    ):
        cells = []
        for key in ("req/s", "us/req"):
            paired = [a[key] / b[key] for a, b in zip(runs[num], runs[den], strict=True)]
            medians = statistics.median(r[key] for r in runs[num]) / statistics.median(
                r[key] for r in runs[den]
            )
            cells.append(f"{medians:.3f} ({spread(paired, '.3f')})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nfiltered live view: {live} updates received; filtered list queries: {lists}")


if __name__ == "__main__":
    asyncio.run(main())
