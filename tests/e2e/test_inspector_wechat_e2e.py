"""WeChat, first class, through a real tunneld and tunnelc, seen in Chromium.

The local app is a WeChat official-account callback written with wechatpy: it checks the
URL-validation signature and answers echostr, and decrypts safe-mode messages and encrypts its
reply. The webhooks are built the way WeChat's server builds them (wechatpy implements the
documented algorithm), sent with curl.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import pytest
from aiohttp import web
from playwright.async_api import async_playwright, expect
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import check_signature

from tests.e2e.test_inspector_e2e import tunnel_to
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from tests.support.curl import curl, resolve
from tests.support.peers import tools_unavailable_reason
from tests.support.procs import Endpoint
from tunnel_client.inspect.signers import wechat_signature

TIMEOUT_S: Final = 90.0
TOKEN: Final = "wx-e2e-token"
AES_KEY: Final = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_ID: Final = "wx1234567890abcdef"
SLOW_S: Final = 5.3  # longer than WeChat's 5 s deadline
SIGNER_TOML: Final = (
    f'\n[[inspect.signers]]\nprovider = "wechat"\nsecret = "{TOKEN}"\n'
    f'encodingAESKey = "{AES_KEY}"\nappID = "{APP_ID}"\n'
)


def text_message(content: str, msg_id: str) -> str:
    return (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
        "<FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def wechat_app() -> web.Application:
    """The developer's callback, as wechatpy's docs write one."""
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)

    async def validate(request: web.Request) -> web.Response:
        q = request.query
        check_signature(TOKEN, q["signature"], q["timestamp"], q["nonce"])
        return web.Response(text=q["echostr"])

    async def message(request: web.Request) -> web.Response:
        q = request.query
        check_signature(TOKEN, q["signature"], q["timestamp"], q["nonce"])
        body = (await request.read()).decode()
        if q.get("encrypt_type") == "aes":
            body = crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"])
            reply = "<xml><Content><![CDATA[got it]]></Content></xml>"
            encrypted = crypto.encrypt_message(reply, q["nonce"], q["timestamp"])
            return web.Response(text=encrypted, content_type="text/xml")
        if "slow please" in body:
            await asyncio.sleep(SLOW_S)  # the behaviour under test: an app slower than 5 s
        return web.Response(text="success")

    app = web.Application()
    app.router.add_get("/wx", validate)
    app.router.add_post("/wx", message)
    return app


def signed_query(**extra: str) -> str:
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    signature = wechat_signature(TOKEN, timestamp, nonce)
    return urlencode({"signature": signature, "timestamp": timestamp, "nonce": nonce, **extra})


async def send(public: Endpoint, query: str, body: str | None = None) -> str:
    args = [*resolve(public.host, public.port), "--fail", f"{public.url}/wx?{query}"]
    if body is not None:
        args += ["-H", "Content-Type: text/xml", "--data-binary", body]
    result = await curl(*args, timeout_s=20)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def safe_mode(xml: str) -> tuple[str, str]:
    """(query, body) of a safe-mode message, as WeChat's server builds it."""
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    envelope = WeChatCrypto(TOKEN, AES_KEY, APP_ID).encrypt_message(xml, nonce, timestamp)
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    msg_signature = envelope.split("<MsgSignature><![CDATA[")[1].split("]]>")[0]
    query = urlencode(
        {
            "signature": wechat_signature(TOKEN, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "encrypt_type": "aes",
            "msg_signature": msg_signature,
        }
    )
    body = (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
    return query, body


pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


@pytest.mark.browser
@requires_chromium
async def test_inspector_wechat_validation_safe_mode_retry_and_slow_answer(
    run_tunneld: Any, run_tunnelc: Any, screenshots: Path, patient_expect: None
) -> None:
    """echostr answered, signature valid; a safe-mode message and its reply decrypted; a
    retry (same MsgId) flagged; an answer after 5 s marked."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(
            run_tunneld, run_tunnelc, local_app=wechat_app(), extra_client_toml=SIGNER_TOML
        ) as (tunnel, _),
        async_playwright() as playwright,
    ):
        assert await send(tunnel.public, signed_query(echostr="E8842")) == "E8842"
        message = text_message("hello in safe mode", "6123456789012345678")
        reply = await send(tunnel.public, *safe_mode(message))
        assert "<Encrypt>" in reply
        await send(tunnel.public, *safe_mode(message))  # WeChat's retry: same MsgId
        await send(tunnel.public, signed_query(), text_message("slow please", "61234567890"))

        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1000})
            await page.goto(tunnel.inspector + "/")
            rows = page.get_by_test_id("request-row")
            await expect(rows).to_have_count(4)
            slow, retry, first, validation = (rows.nth(i) for i in range(4))
            await expect(slow.get_by_test_id("row-slow")).to_have_text("slower than 5 s")
            await expect(retry.get_by_test_id("row-retry")).to_contain_text("WeChat retry of #")
            await expect(first.get_by_test_id("row-retry")).to_have_count(0)

            await validation.click()
            await expect(page.get_by_test_id("signature")).to_contain_text("wechat signature valid")
            await expect(page.get_by_test_id("wechat-echostr")).to_contain_text(
                "answered the echostr"
            )

            await first.click()
            await expect(page.get_by_test_id("signature")).to_contain_text("msg_signature valid")
            await expect(page.get_by_test_id("wechat-decrypted")).to_contain_text(
                "hello in safe mode"
            )
            await expect(page.get_by_test_id("wechat-reply")).to_contain_text("got it")
            await page.screenshot(path=str(screenshots / "inspector-wechat-safe-mode.png"))

            await retry.click()
            await expect(page.get_by_test_id("wechat-retry")).to_contain_text("same MsgId")
            await slow.click()
            await expect(page.get_by_test_id("wechat-slow")).to_contain_text("gives up")
            await page.screenshot(path=str(screenshots / "inspector-wechat-slow.png"))
        finally:
            await browser.close()
