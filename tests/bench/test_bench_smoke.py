"""The short side-by-side benchmark (bench/run_all.py --quick --check) with its ratio floors.

Deselected by default (pyproject's addopts); .ci/run runs it alone, before the parallel
suite, with `pytest -m bench_smoke -p no:xdist`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.peers import tools_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT_S = 300  # the run takes about 35 s on an idle 2-core machine

pytestmark = [pytest.mark.bench_smoke, pytest.mark.e2e]


def test_bench_smoke_ratios_above_floors(tmp_path: Path) -> None:
    """tunnelkit's ratios to direct and ssh -R stay above half of what this machine measures."""
    missing = tools_unavailable_reason("iperf3", "wrk", "nginx", "sshd", "ssh")
    if missing:
        pytest.skip(missing)
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--check", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert results["tunnelkit"]["HTTP vhost req/s"][0] > 0
