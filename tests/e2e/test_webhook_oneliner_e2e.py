"""Done when: a WeChat callback exposed with one command, end to end with the real processes.

`tunnelc http PORT --wechat-token ... --wechat-aes-key ... --offline-capture`: each message is
decoded and its signature checked in the inspector; the webhooks that arrive while tunnelc is
down reach the app once it is back, marked delivered late; after the restart, the first
message is replayed re-signed and the app's own (wechatpy) signature check accepts it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from tests.e2e.test_http_e2e import start_oneliner, start_tunneld
from tests.e2e.test_inspector_wechat_e2e import (
    AES_KEY,
    APP_ID,
    TOKEN,
    safe_mode,
    text_message,
    wechat_app,
)
from tests.support.browser import serve_app
from tests.support.curl import curl, resolve
from tests.support.peers import tools_unavailable_reason
from tests.support.procs import (
    INSPECTOR_READY,
    Endpoint,
    ProcessGroup,
    TunnelProcess,
    oneliner_name,
)

TIMEOUT_S: Final = 90.0
ONE_COMMAND: Final = (
    "--subdomain", "wx", "--log", "--wechat-token", TOKEN, "--wechat-aes-key", AES_KEY,
    "--wechat-app-id", APP_ID, "--offline-capture",
)  # fmt: skip

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


async def deliver(public: Endpoint, query: str, body: str) -> tuple[int, str]:
    """POST one WeChat message the way WeChat's server does; (status, body)."""
    result = await curl(
        *resolve(public.host, public.port),
        "-H", "Content-Type: text/xml", "--data-binary", body,
        "-w", "\n%{http_code}", f"{public.url}/wx?{query}",
        timeout_s=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text, _, status = result.stdout.decode().rpartition("\n")
    return int(status), text


async def listed(client: TunnelProcess, count: int) -> tuple[str, list[dict[str, Any]]]:
    """The inspector's base URL and its list, once it holds `count` finished requests."""
    found = await client.wait_for(INSPECTOR_READY)
    base = f"http://127.0.0.1:{found['port']}"
    async with aiohttp.ClientSession(base) as http:
        for _ in range(200):  # the capture publishes once each exchange is finished
            async with http.get("/api/requests") as response:
                rows = (await response.json())["requests"]
            if len([r for r in rows if r["status"] is not None]) >= count:
                return base, rows
            await asyncio.sleep(0.1)
    raise AssertionError(f"the inspector never listed {count} finished requests: {rows}")


async def test_webhook_oneliner_wechat_decoded_captured_offline_and_replayed_resigned(
    run_tunneld: Any, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """One command: a safe-mode message decoded with its signature checked; one sent while
    tunnelc is down delivered late; the first replayed re-signed after the restart."""
    async with asyncio.timeout(TIMEOUT_S), serve_app(wechat_app()) as local_url:
        server = await start_tunneld(run_tunneld)
        port = int(local_url.rsplit(":", 1)[1])
        client = await start_oneliner(process_group, server, tmp_path, port, *ONE_COMMAND)
        public = await client.proxy_endpoint(oneliner_name("http", port))
        status, reply = await deliver(public, *safe_mode(text_message("hello", "6100000000001")))
        assert status == 200 and "<Encrypt>" in reply  # wechatpy decrypted it and answered

        base, rows = await listed(client, 1)
        first_id = rows[0]["id"]
        async with (
            aiohttp.ClientSession(base) as http,
            http.get(f"/api/requests/{first_id}") as response,
        ):
            detail = await response.json()
        assert detail["signature"]["valid"] is True, detail["signature"]
        assert "hello" in detail["wechat"]["decrypted"]
        assert "msg_signature valid" in detail["signature"]["detail"]

        await client.terminate()
        await server.process.wait_for(r"client offline: tunneld answers and stores requests")
        query, body = safe_mode(text_message("while you were away", "6100000000002"))
        assert await deliver(public, query, body) == (200, "")  # WeChat stops retrying

        again = await start_oneliner(process_group, server, tmp_path, port, *ONE_COMMAND)
        assert (await again.proxy_endpoint(oneliner_name("http", port))).url == public.url
        await server.process.wait_for(r"delivered 1 stored requests")
        base, rows = await listed(again, 2)
        late = [r for r in rows if r["late"]]
        assert len(late) == 1 and late[0]["status"] == 200  # the app accepted it, late
        async with aiohttp.ClientSession(base) as http:
            async with http.get(f"/api/requests/{late[0]['id']}") as response:
                assert "while you were away" in (await response.json())["wechat"]["decrypted"]
            # The first message, from the history, replayed re-signed after the restart.
            async with http.post(
                f"/api/requests/{first_id}/replay", json={"resign": True}
            ) as response:
                replayed = await response.json()
        assert response.status == 200, replayed
        assert replayed["status"] == 200 and replayed["signature"]["valid"] is True
