"""`tunnelc demo` as a user runs it: it prints the server dashboard and /metrics, they answer,
and Ctrl-C (SIGINT) ends it with "stopped", exit code 0 and no warning."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Final

import aiohttp

TIMEOUT_S: Final = 60.0


async def test_demo_prints_dashboard_and_metrics_and_stops_cleanly(tmp_path: Path) -> None:
    """The dashboard and /metrics URLs it prints work; SIGINT prints 'stopped', exit 0."""
    tunnelc = str(Path(sys.executable).with_name("tunnelc"))
    proc = await asyncio.create_subprocess_exec(
        tunnelc,
        "demo",
        "--inspect-port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while not any("Press Ctrl-C" in line for line in lines):
                raw = await proc.stdout.readline()
                assert raw, "the demo exited early:\n" + "".join(lines)
                lines.append(raw.decode())
            text = "".join(lines)
            dashboard = re.search(r"server dashboard:\s+(\S+)", text)
            metrics = re.search(r"server metrics:\s+(\S+)", text)
            assert dashboard and metrics, text
            async with aiohttp.ClientSession() as http:
                async with http.get(dashboard[1]) as response:
                    assert response.status == 200
                    assert "tunnelkit" in (await response.text()).lower()
                async with http.get(metrics[1]) as response:
                    assert response.status == 200
                    assert "# TYPE" in await response.text()
            proc.send_signal(signal.SIGINT)
            rest, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    tail = rest.decode()
    assert proc.returncode == 0, text + tail
    assert "tunnelkit demo stopped" in tail
    assert "WARNING" not in tail and "Traceback" not in tail, tail
