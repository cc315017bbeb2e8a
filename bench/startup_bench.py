"""Start-up cost of the command lines: `tunnelc --version` and `tunneld --version`.

    .venv/bin/python bench/startup_bench.py [--runs 20]

Runs `python -c pass` and each console script (next to this Python) `--runs` times, one after
another, and prints the median and best wall time and the peak RSS of one run. The goal
(issue 12) is under 0.15 s: the command lines import the event loop, the config schema, the
apps, aiohttp, cryptography and the rest only when a command needs them
(tests/unit/test_lazy_imports.py checks that structurally).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(argv: list[str], runs: int) -> tuple[float, float, int]:
    """(median s, best s, peak RSS KiB) of running `argv` `runs` times."""
    times: list[float] = []
    peak = 0
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - started)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
        peak = max(peak, usage.ru_maxrss)
    return statistics.median(times), min(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    # The interpreter alone, in the same run: on a loaded machine the difference is the part
    # tunnelkit's imports cost.
    runs: list[tuple[str, list[str]]] = [("python -c pass", [sys.executable, "-c", "pass"])]
    for program in ("tunnelc", "tunneld"):
        exe = str(Path(sys.executable).with_name(program))
        runs.append((f"{program} --version", [exe, "--version"]))
    for label, argv in runs:
        median, best, rss = measure(argv, args.runs)
        print(
            f"{label}: median {median * 1000:.0f} ms, best {best * 1000:.0f} ms, "
            f"peak RSS {rss / 1024:.1f} MiB ({args.runs} runs)"
        )


if __name__ == "__main__":
    main()
