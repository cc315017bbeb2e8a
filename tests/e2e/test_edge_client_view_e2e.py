"""What the client shows once the edge holds a certificate (issue 15, item 6), against pebble.

The one-liner `tunnelc http PORT --subdomain NAME` runs in tmux: its live panel first says the
certificate is pending, then shows the https:// URL. The inspector page, in Chromium, lists the
proxy's public URLs and gains the https:// one when the certificate arrives.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.test_acme_e2e import ISSUE_WAIT_S, client_toml, https_get, start_acme_stack
from tests.e2e.test_http_e2e import SUB_DOMAIN_HOST, TOKEN, echo_apps, http_proxy
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from tests.support.procs import INSPECTOR_READY, ProcessGroup
from tests.support.tmux import TMUX, terminal

TIMEOUT_S: Final = 150.0


def panel_rows(screen: str) -> str:
    """The panel's own rows (Session to Requests), without the log lines at its foot."""
    start = screen.find("Session")
    end = screen.find("Requests", start)
    assert start >= 0 and end > start, screen
    return screen[start:end]


@pytest.mark.skipif(TMUX is None, reason="the panel test drives tmux")
async def test_edge_panel_shows_pending_then_https_url_in_tmux(
    run_tunneld: Any, process_group: ProcessGroup, tmp_path: Path, artifacts: Path
) -> None:
    """`tunnelc http --subdomain` in a terminal: "pending certificate", then the https:// URL."""
    socket = f"tk-edge-panel-{os.getpid()}-{tmp_path.name}"
    async with asyncio.timeout(TIMEOUT_S), echo_apps("wx") as (app,):
        server, ports, pebble = await start_acme_stack(
            run_tunneld, process_group, tmp_path, challenges=["tls-alpn-01"]
        )
        home = tmp_path / "home-panel"
        home.mkdir()
        tunnelc = str(Path(sys.executable).with_name("tunnelc"))
        command = shlex.join(
            [
                "env",
                f"HOME={home}",
                tunnelc,
                "http",
                str(app.port),
                "--server",
                f"127.0.0.1:{ports['control']}",
                "--token",
                TOKEN,
                "--server-fingerprint",
                await server.fingerprint(),
                "--subdomain",
                "wx",
            ]
        )
        async with terminal(socket, command, width=120, height=45) as term:
            http_url = f"http://wx.{SUB_DOMAIN_HOST}:{ports['http']}"
            https_url = f"https://wx.{SUB_DOMAIN_HOST}:{ports['https']}"
            shown = await term.screen_with("online", http_url)
            (artifacts / "edge-panel-first.txt").write_text(shown)
            # The pebble order may already be done; if not, the panel's row says so.
            if https_url not in panel_rows(shown):
                assert "(https pending certificate for wx." in panel_rows(shown), shown
            shown = await term.screen_with(https_url)
            rows = panel_rows(await term.screen_with(https_url))
            (artifacts / "edge-panel-https.txt").write_text(shown)
            assert any(line.strip() == https_url for line in rows.splitlines()), rows
            assert f"{http_url} -> 127.0.0.1:{app.port}" in rows, rows
            assert "pending" not in rows, rows
            echoed = await https_get(f"wx.{SUB_DOMAIN_HOST}", ports["https"], pebble.issuer_root)
            assert echoed["app"] == "wx"
            await term.send_keys("C-c")
            shown = await term.screen_with("tunnelc: stopped")
            assert "Traceback" not in shown


@requires_chromium
async def test_edge_inspector_page_shows_https_url_once_issued(
    run_tunneld: Any,
    run_tunnelc: Any,
    process_group: ProcessGroup,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    """The inspector page lists the proxy's URLs and adds https:// when pebble issues it."""
    async with asyncio.timeout(TIMEOUT_S), echo_apps("hook") as (app,):
        server, ports, pebble = await start_acme_stack(
            run_tunneld, process_group, tmp_path, challenges=["http-01"]
        )
        text = client_toml(
            ports, await server.fingerprint(), http_proxy("hook", app.port, subdomain="hook")
        )
        text = text.replace("inspect.enabled = false", "")
        text = 'inspect.enabled = true\ninspect.addr = "127.0.0.1"\ninspect.port = 0\n' + text
        client = await run_tunnelc(text)
        found = await client.wait_for(INSPECTOR_READY)
        base = f"http://127.0.0.1:{found['port']}"
        http_url = f"http://hook.{SUB_DOMAIN_HOST}:{ports['http']}"
        https_url = f"https://hook.{SUB_DOMAIN_HOST}:{ports['https']}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1360, "height": 900})
                await page.goto(base + "/")
                urls = page.get_by_test_id("tunnel-url")
                await expect(urls.filter(has_text=http_url)).to_have_count(1)
                await expect(urls.filter(has_text=https_url)).to_have_count(
                    1, timeout=ISSUE_WAIT_S * 1000
                )
                link = urls.filter(has_text=https_url)
                assert await link.get_attribute("href") == https_url + "/"
                await expect(page.get_by_test_id("tunnel-note")).to_have_count(0)
                # A request that came in over HTTPS is captured like any other.
                host = f"hook.{SUB_DOMAIN_HOST}"
                echoed = await https_get(host, ports["https"], pebble.issuer_root, "/over-tls")
                assert echoed["app"] == "hook"
                await expect(page.get_by_test_id("request-row")).to_have_count(1)
                await expect(page.get_by_test_id("request-row")).to_contain_text("/over-tls")
                await page.screenshot(path=str(screenshots / "edge-inspector-https.png"))
            finally:
                await browser.close()
        await client.wait_for(rf"tunnelc: proxy hook ready at .*{https_url}")
