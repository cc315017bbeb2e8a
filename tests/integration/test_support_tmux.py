"""The test terminal (tests/support/tmux.py): what it starts is stopped on every path."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.support.tmux import TMUX, terminal, tmux

TEST_TIMEOUT_S: Final = 60.0
# Stands in for tunnelc: takes SIGHUP (a closed terminal) as a reload and keeps running, and
# starts a child of its own that must not outlive the test either.
HUP_PROOF = """
import signal, subprocess, sys
signal.signal(signal.SIGHUP, lambda *_: None)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("up", child.pid, flush=True)
while True:
    signal.pause()
"""

pytestmark = pytest.mark.skipif(TMUX is None, reason="drives tmux")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child of a killed process may be a zombie until its new parent reaps it.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_terminal_stops_hup_proof_command_and_server_when_test_fails(
    tmp_path: Path,
) -> None:
    """A failing test still leaves no pane process, no child of it, and no tmux server."""
    socket = f"tk-term-{os.getpid()}-{tmp_path.name}"
    command = shlex.join([sys.executable, "-c", HUP_PROOF])
    pids: list[int] = []
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(RuntimeError, match="the test failed"):
            async with terminal(socket, command) as term:
                screen = await term.screen_with("up ")
                pids = [term.pid, int(screen.split("up ", 1)[1].split()[0])]
                assert all(alive(pid) for pid in pids)
                raise RuntimeError("the test failed")
        while any(alive(pid) for pid in pids):  # noqa: ASYNC110 (reaped by others: no event)
            await asyncio.sleep(0.05)
        with pytest.raises(AssertionError, match="tmux ls"):
            await tmux(socket, "ls")  # the server is gone too
