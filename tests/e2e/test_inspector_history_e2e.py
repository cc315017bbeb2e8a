"""Inspector history that lasts: a real tunnelc is restarted and still shows its captures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from tests.e2e.test_inspector_e2e import (
    WECHAT_XML,
    next_event,
    send_webhook,
    tunnel_to,
)
from tests.support.peers import tools_unavailable_reason
from tests.support.procs import INSPECTOR_READY

TIMEOUT_S: Final = 60.0

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


async def test_inspector_history_survives_a_client_restart(
    run_tunneld: Any, run_tunnelc: Any, tmp_path: Path
) -> None:
    """SIGTERM tunnelc, start it again: the webhook, its body and its status are still listed,
    and a new capture gets a newer id."""
    async with asyncio.timeout(TIMEOUT_S), tunnel_to(run_tunneld, run_tunnelc) as (tunnel, _):
        async with (
            aiohttp.ClientSession(tunnel.inspector) as http,
            http.get("/api/events") as events,
        ):
            await next_event(events, "hello")
            await send_webhook(tunnel.public)
            done = await next_event(events, "updated", path="/wechat", status=200)
        first_id = done["exchange"]["id"]
        history_line = await tunnel.client.wait_for(r"inspector history in (?P<path>\S+)")
        assert await asyncio.to_thread(Path(history_line["path"]).is_file)

        await tunnel.client.terminate()
        assert tunnel.client.config_path is not None
        again = await run_tunnelc(tunnel.client.config_path.read_text())
        await again.wait_for(r"inspector history in \S+ \(1 requests loaded\)")
        found = await again.wait_for(INSPECTOR_READY)
        public = await again.proxy_endpoint("hook")
        async with aiohttp.ClientSession(f"http://127.0.0.1:{found['port']}") as http:
            async with http.get("/api/requests") as response:
                listed = (await response.json())["requests"]
            assert [(r["id"], r["path"], r["status"]) for r in listed] == [
                (first_id, "/wechat", 200)
            ]
            async with http.get(f"/api/requests/{first_id}") as response:
                detail = await response.json()
            assert detail["request_body"]["text"] == WECHAT_XML
            async with http.get("/api/events") as events:
                await next_event(events, "hello")
                await send_webhook(public, "/after-restart")
                newer = await next_event(events, "updated", path="/after-restart", status=200)
        assert newer["exchange"]["id"] > first_id
