"""Browser-test helpers: the system Chromium for Playwright, and apps on 127.0.0.1:0."""

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Final

import pytest
from aiohttp import web
from playwright.async_api import Page, async_playwright

CHROMIUM: Final = "/usr/bin/chromium"  # Debian's package; tests never download a browser
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]

requires_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)",
)


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1 with a free port; yield its base URL (no trailing slash)."""
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def chromium_page(url: str, width: int = 1400, height: int = 800) -> AsyncIterator[Page]:
    """Headless Chromium on `url`; the browser is closed on every path."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            await page.goto(url)
            yield page
        finally:
            await browser.close()
