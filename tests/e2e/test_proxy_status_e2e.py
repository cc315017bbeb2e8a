"""What tunnelc shows about its proxies' extras: /api/status, /metrics and `tunnelc status`
report the plugin, the bandwidth limit and the current rate, health and metadata."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_plugins_e2e import start_server, toml
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from tests.support.echo import tcp_source_server
from tests.support.peers import run_command
from tests.support.procs import ADMIN_READY, venv_script

RATE: Final = 1024 * 1024
SOURCE_BYTES: Final = 90 * RATE  # flows for the whole test at the limit: the rate never drops


class Download:
    """What the downloading peer has received so far, with when (bounded: one sample per read,
    a few hundred over a test)."""

    WINDOW_S: Final = 2.5  # the meter's 2 s of full slots end at most one 0.5 s slot ago

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=4096)
        self.received = 0

    def add(self, nbytes: int) -> None:
        self.received += nbytes
        self.samples.append((time.monotonic(), self.received))

    def rate(self) -> float:
        """Bytes per second that arrived over the last WINDOW_S seconds."""
        since = time.monotonic() - self.WINDOW_S
        before = max((total for when, total in self.samples if when <= since), default=0)
        return (self.received - before) / self.WINDOW_S

    def assert_shown(self, shown: float) -> None:
        """`shown` (a rate a surface reported just now) is the rate the peer is receiving at,
        and neither is over the limit. On a loaded machine the flow may run under the limit:
        the surface must then show that lower rate, not the limit."""
        actual = self.rate()
        assert actual <= 1.2 * RATE and shown <= 1.2 * RATE, (shown, actual)
        assert 0.7 * actual <= shown <= 1.3 * actual, (shown, actual)


@contextlib.asynccontextmanager
async def limited_download(port: int) -> AsyncIterator[Download]:
    """Download through `port` in the background for the duration of the block, once 3 MiB
    (past the meter's 2 s window) have arrived; closes the connection at the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    download = Download()
    while download.received < 3 * RATE:
        chunk = await reader.read(65536)
        assert chunk
        download.add(len(chunk))

    async def keep_reading() -> None:
        while chunk := await reader.read(65536):
            download.add(len(chunk))

    reading = asyncio.create_task(keep_reading())
    try:
        yield download
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        writer.transport.abort()


async def test_proxy_status_shows_limit_rate_health_plugin_and_metadata(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """During a limited download, every surface shows ~1MB/s against a 1MB/s limit."""
    async with asyncio.timeout(90), tcp_source_server(SOURCE_BYTES) as source:
        _, port, fingerprint = await start_server(run_tunneld)
        head = toml(
            {
                "serverAddr": "127.0.0.1",
                "serverPort": port,
                "auth.token": "plugin-e2e-token",
                "transport.tls.serverFingerprint": fingerprint,
                "inspect.enabled": False,
                "webServer.addr": "127.0.0.1",
                "webServer.port": 0,
            }
        )
        limited = toml(
            {
                "name": "slow",
                "type": "tcp",
                "localPort": source.port,
                "remotePort": 0,
                "transport.bandwidthLimit": "1MB",
                "healthCheck.type": "tcp",
                "healthCheck.intervalSeconds": 1,
                "metadatas.owner": "ops",
                "annotations.team": "blue",
            }
        )
        socks = toml({"name": "socks", "type": "tcp", "remotePort": 0})
        client = await run_tunnelc(
            f'{head}[[proxies]]\n{limited}[[proxies]]\n{socks}[proxies.plugin]\ntype = "socks5"\n'
        )
        admin = await client.wait_for(ADMIN_READY)
        base = f"http://127.0.0.1:{admin['port']}"
        public = await client.proxy_endpoint("slow")
        await client.proxy_endpoint("socks")

        async with limited_download(public.port) as download:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/api/status") as response:
                    rows = {row["name"]: row for row in (await response.json())["proxies"]}
                async with http.get(f"{base}/metrics") as response:
                    metrics = await response.text()
            slow = rows["slow"]
            assert slow["bandwidth"]["limit_bytes_per_s"] == RATE
            assert slow["bandwidth"]["limit"] == "1.0MB/s" and slow["bandwidth"]["mode"] == "client"
            download.assert_shown(slow["bandwidth"]["rate_bytes_per_s"])
            assert slow["health"]["healthy"] is True and slow["health"]["type"] == "tcp"
            assert slow["metadatas"] == {"owner": "ops"} and slow["annotations"] == {"team": "blue"}
            assert rows["socks"]["plugin"]["type"] == "socks5"
            assert rows["socks"]["local"] == "plugin socks5"

            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(metrics)
                for sample in family.samples
            }
            assert samples[("tunnelc_proxy_healthy", (("check", "tcp"), ("proxy", "slow")))] == 1
            limit_key = (
                "tunnelc_proxy_bandwidth_limit_bytes_per_second",
                (("mode", "client"), ("proxy", "slow")),
            )
            assert samples[limit_key] == RATE
            rate = samples[("tunnelc_proxy_bandwidth_rate_bytes_per_second", (("proxy", "slow"),))]
            download.assert_shown(rate)
            plugin_key = ("tunnelc_proxy_plugin_info", (("plugin", "socks5"), ("proxy", "socks")))
            assert samples[plugin_key] == 1

            config = client.config_path
            assert config is not None
            text = config.read_text().replace(
                "webServer.port = 0", f"webServer.port = {admin['port']}"
            )
            config.write_text(text)
            shown = await run_command([str(venv_script("tunnelc")), "status", "-c", str(config)])
            assert re.search(r"limit 1\.0MB/s \(client\), now 1\.\dMB/s|now \d+KB/s", shown), shown
            assert "tcp check healthy" in shown and "plugin socks5" in shown


@pytest.mark.browser
@requires_chromium
async def test_dashboard_shows_metadatas_annotations_and_a_server_paced_limit(
    run_tunneld: Any, run_tunnelc: Any, patient_expect: None
) -> None:
    """tunneld's /api/proxies and its page carry what the client declared, and the rate it
    paces the proxy at."""
    async with asyncio.timeout(90), tcp_source_server(SOURCE_BYTES) as source:
        server, port, fingerprint = await start_server(
            run_tunneld,
            **{"webServer.addr": "127.0.0.1", "webServer.port": 0, "enablePrometheus": True},
        )
        dashboard = await server.dashboard_address()
        head = toml(
            {
                "serverAddr": "127.0.0.1",
                "serverPort": port,
                "auth.token": "plugin-e2e-token",
                "transport.tls.serverFingerprint": fingerprint,
                "inspect.enabled": False,
            }
        )
        proxy = toml(
            {
                "name": "paced",
                "type": "tcp",
                "localPort": source.port,
                "remotePort": 0,
                "transport.bandwidthLimit": "1MB",
                "transport.bandwidthLimitMode": "server",
                "metadatas.var1": "abc",
                "annotations.key1": "value1",
            }
        )
        client = await run_tunnelc(head + "[[proxies]]\n" + proxy)
        public = await client.proxy_endpoint("paced")
        async with limited_download(public.port) as download:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{dashboard.url}/api/proxies") as response:
                    body = await response.json()
                async with http.get(f"{dashboard.url}/metrics") as response:
                    metrics = await response.text()
            rows = body["proxies"] if isinstance(body, dict) else body
            (paced,) = [row for row in rows if row["name"] == "paced"]
            assert paced["metadatas"] == {"var1": "abc"}
            assert paced["annotations"] == {"key1": "value1"}
            assert paced["bandwidth_limit"] == RATE
            download.assert_shown(paced["bandwidth_rate"])
            samples = {
                sample.name: sample.value
                for family in text_string_to_metric_families(metrics)
                for sample in family.samples
                if sample.labels.get("proxy") == "paced"
            }
            assert samples["tunnelkit_proxy_bandwidth_limit_bytes_per_second"] == RATE
            download.assert_shown(samples["tunnelkit_proxy_bandwidth_rate_bytes_per_second"])
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                try:
                    page = await browser.new_page()
                    await page.goto(dashboard.url + "/")
                    await expect(page.get_by_test_id("proxy-meta")).to_have_text(
                        "key1=value1 var1=abc"
                    )
                    await expect(page.get_by_test_id("proxy-limit")).to_contain_text(
                        "limit 1.0 MiB/s, now"
                    )
                finally:
                    await browser.close()
