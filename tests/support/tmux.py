"""A real terminal for tests: one tmux server on a socket of its own, one session running a
command, read back with capture-pane.

    async with terminal(f"tk-panel-{os.getpid()}-{tmp_path.name}", command) as term:
        await term.screen_with("online")
        await term.send_keys("C-c")

On exit, on every path (a failed assertion, the test's timeout), the terminal stops what it
started, by PID: the pane's process group gets SIGTERM (SIGKILL after KILL_AFTER_S) if its
process is still the one the pane started, then the tmux server is killed. Killing the tmux
server alone is not enough: it sends the pane SIGHUP, which tunnelc takes as "reload the
config" and keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

TMUX: Final = shutil.which("tmux")
TMUX_COMMAND_TIMEOUT_S: Final = 10.0  # one tmux command (capture-pane, send-keys, ...)
SCREEN_WAIT_S: Final = 30.0  # how long screen_with waits for its text
SCREEN_POLL_S: Final = 0.2  # a terminal has no event to wait on: its screen is polled
KILL_AFTER_S: Final = 5.0  # SIGTERM to the pane's processes, then SIGKILL after this long


async def tmux(socket: str, *args: str) -> str:
    """Run one tmux command against the server on `socket`; its stdout (fails on an error)."""
    assert TMUX is not None
    proc = await asyncio.create_subprocess_exec(
        TMUX, "-L", socket, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(TMUX_COMMAND_TIMEOUT_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"tmux {' '.join(args)}: {err.decode().strip()}"
    return out.decode()


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Terminal:
    """The session `name` on the tmux server `socket`; `pid` is the pane's first process."""

    def __init__(self, socket: str, name: str, pid: int) -> None:
        self.socket = socket
        self.name = name
        self.pid = pid
        self._started = _start_time(pid)

    async def screen(self) -> str:
        return await tmux(self.socket, "capture-pane", "-p", "-t", self.name)

    async def screen_with(self, *needles: str) -> str:
        """The pane's text once it shows every needle (polls the screen, SCREEN_WAIT_S)."""
        deadline = time.monotonic() + SCREEN_WAIT_S
        text = ""
        while time.monotonic() < deadline:
            text = await self.screen()
            if all(needle in text for needle in needles):
                return text
            await asyncio.sleep(SCREEN_POLL_S)
        raise AssertionError(f"the terminal never showed {needles}; last screen:\n{text}")

    async def send_keys(self, *keys: str) -> None:
        await tmux(self.socket, "send-keys", "-t", self.name, *keys)

    def _running(self) -> bool:
        """The pane's own process still runs (the same PID and start time)."""
        return self._started is not None and _start_time(self.pid) == self._started

    async def stop(self) -> None:
        """SIGTERM then SIGKILL to the pane's process group while it runs; kill the server."""
        # The pane's process leads a session (and process group) of its own: tmux made it so.
        for sig, wait_s in ((signal.SIGTERM, KILL_AFTER_S), (signal.SIGKILL, KILL_AFTER_S)):
            if not self._running():
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + wait_s
            while self._running() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(SCREEN_POLL_S)  # tmux reaps it: no exit event reaches us
        with contextlib.suppress(AssertionError):  # already gone: nothing to kill
            await tmux(self.socket, "kill-server")


@contextlib.asynccontextmanager
async def terminal(
    socket: str, command: str, *, name: str = "panel", width: int = 150, height: int = 45
) -> AsyncIterator[Terminal]:
    """Run `command` (one shell string) in a new tmux server's session; stop both on exit.

    The pane stays after its command ends (remain-on-exit, set in the same tmux call, before
    the command can end), so its last screen can still be read.
    """
    await tmux(
        socket,
        "-f",
        os.devnull,
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        str(width),
        "-y",
        str(height),
        command,
        ";",
        "set-option",
        "-t",
        name,
        "remain-on-exit",
        "on",
    )
    try:
        pid = int((await tmux(socket, "display-message", "-p", "-t", name, "#{pane_pid}")).strip())
    except BaseException:
        with contextlib.suppress(AssertionError):
            await tmux(socket, "kill-server")
        raise
    term = Terminal(socket, name, pid)
    try:
        yield term
    finally:
        await term.stop()
