"""The live terminal panel of `tunnelc http`, driven in a real terminal (tmux) and read back
with capture-pane: online with the public URL, a request listed, reconnecting with its
attempt count when tunneld goes away, and "stopped" after Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.test_inspector_e2e import RecordingApp
from tests.support.browser import serve_app
from tests.support.curl import curl, resolve

TIMEOUT_S: Final = 90.0
SCREEN_WAIT_S: Final = 30.0
TOKEN: Final = "panel-token"
TMUX: Final = shutil.which("tmux")

pytestmark = pytest.mark.skipif(TMUX is None, reason="the panel test drives tmux")


async def tmux(socket: str, *args: str) -> str:
    assert TMUX is not None
    proc = await asyncio.create_subprocess_exec(
        TMUX, "-L", socket, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(10):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def screen_with(socket: str, *needles: str) -> str:
    """The pane's text once it shows every needle (polls the screen, bounded)."""
    deadline = time.monotonic() + SCREEN_WAIT_S
    text = ""
    while time.monotonic() < deadline:
        text = await tmux(socket, "capture-pane", "-p", "-t", "panel")
        if all(needle in text for needle in needles):
            return text
        await asyncio.sleep(0.2)  # a terminal has no event to wait on: poll its screen
    raise AssertionError(f"the panel never showed {needles}; last screen:\n{text}")


async def test_panel_shows_state_urls_requests_and_reconnects_in_tmux(
    run_tunneld: Any, tmp_path: Path, artifacts: Path
) -> None:
    """A TTY gets the live panel: online + URL, requests with status, reconnecting, stopped."""
    socket = f"tk-panel-{os.getpid()}-{tmp_path.name}"
    local = RecordingApp()
    async with asyncio.timeout(TIMEOUT_S), serve_app(local.app()) as local_url:
        server = await run_tunneld(
            'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
            f'subDomainHost = "example.test"\nauth.token = "{TOKEN}"\n'
        )
        control = await server.control_address()
        vhost = await server.http_vhost_address()
        home = tmp_path / "home-panel"
        home.mkdir()
        tunnelc = str(Path(sys.executable).with_name("tunnelc"))
        command = shlex.join(
            [
                "env",
                f"HOME={home}",
                tunnelc,
                "http",
                local_url.rsplit(":", 1)[1],
                "--server",
                f"127.0.0.1:{control.port}",
                "--token",
                TOKEN,
                "--server-fingerprint",
                await server.fingerprint(),
                "--subdomain",
                "panel",
            ]
        )
        await tmux(socket, "new-session", "-d", "-s", "panel", "-x", "150", "-y", "45", command)
        try:
            await tmux(socket, "set-option", "-t", "panel", "remain-on-exit", "on")
            url = f"http://panel.example.test:{vhost.port}"
            await screen_with(socket, "Session", "online", url, "Requests")

            result = await curl(
                *resolve("panel.example.test", vhost.port), "-d", "hi", url + "/hello"
            )
            assert result.returncode == 0, result.stderr
            shown = await screen_with(socket, "POST", "/hello", "200 OK")
            (artifacts / "panel-online.txt").write_text(shown)

            await server.terminate()
            # Any attempt: on a loaded machine the first one may be gone before a capture.
            shown = await screen_with(socket, "reconnecting (attempt ", "next try in")
            (artifacts / "panel-reconnecting.txt").write_text(shown)

            await tmux(socket, "send-keys", "-t", "panel", "C-c")
            shown = await screen_with(socket, "tunnelc: stopped")
            assert "Traceback" not in shown
            (artifacts / "panel-stopped.txt").write_text(shown)
        finally:
            await tmux(socket, "kill-server")  # our own tmux server, on our own socket
