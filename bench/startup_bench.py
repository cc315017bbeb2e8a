"""Start-up cost of the command lines: `tunnelc --version` and `tunneld --version`.

    .venv/bin/python bench/startup_bench.py [--runs 20]

Runs each console script (next to this Python) `--runs` times, one after another, and prints
the median and best wall time and the peak RSS of one run. The goal (issue 12) is under 0.15 s:
the command lines import the config schema, the apps, aiohttp, cryptography and the rest only
when a command needs them (tests/unit/test_lazy_imports.py checks that structurally).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(program: str, runs: int) -> tuple[float, float, int]:
    """(median s, best s, peak RSS KiB) of `program --version`."""
    exe = Path(sys.executable).with_name(program)
    times: list[float] = []
    peak = 0
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen([str(exe), "--version"], stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - started)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{program} --version exited {proc.returncode}")
        peak = max(peak, usage.ru_maxrss)
    return statistics.median(times), min(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for program in ("tunnelc", "tunneld"):
        median, best, rss = measure(program, args.runs)
        print(
            f"{program} --version: median {median * 1000:.0f} ms, best {best * 1000:.0f} ms, "
            f"peak RSS {rss / 1024:.1f} MiB ({args.runs} runs)"
        )


if __name__ == "__main__":
    main()
