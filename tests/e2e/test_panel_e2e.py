"""The live terminal panel of `tunnelc http`, driven in a real terminal (tmux) and read back
with capture-pane: online with the public URL, a request listed, reconnecting with its
attempt count when tunneld goes away, and "stopped" after Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.test_inspector_e2e import RecordingApp
from tests.support.browser import serve_app
from tests.support.curl import curl, resolve
from tests.support.tmux import TMUX, terminal

TIMEOUT_S: Final = 90.0
TOKEN: Final = "panel-token"

pytestmark = pytest.mark.skipif(TMUX is None, reason="the panel test drives tmux")


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
        async with terminal(socket, command, width=150, height=45) as term:
            url = f"http://panel.example.test:{vhost.port}"
            await term.screen_with("Session", "online", url, "Requests")

            result = await curl(
                *resolve("panel.example.test", vhost.port), "-d", "hi", url + "/hello"
            )
            assert result.returncode == 0, result.stderr
            shown = await term.screen_with("POST", "/hello", "200 OK")
            (artifacts / "panel-online.txt").write_text(shown)

            await server.terminate()
            # Any attempt: on a loaded machine the first one may be gone before a capture.
            shown = await term.screen_with("reconnecting (attempt ", "next try in")
            (artifacts / "panel-reconnecting.txt").write_text(shown)

            await term.send_keys("C-c")
            shown = await term.screen_with("tunnelc: stopped")
            assert "Traceback" not in shown
            (artifacts / "panel-stopped.txt").write_text(shown)
