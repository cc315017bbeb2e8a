"""Replays that providers accept: a real tunnelc re-signs GitHub and Stripe webhooks.

The local app verifies like the providers' SDKs do: Stripe's with the `stripe` package
(`WebhookSignature.verify_header`, with a short tolerance so the test does not wait five
minutes), GitHub's with its documented HMAC. A verbatim Stripe replay after the tolerance
is rejected; the re-signed one is accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import stripe
from aiohttp import web
from playwright.async_api import async_playwright, expect

from tests.e2e.test_inspector_e2e import next_event, tunnel_to
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from tests.support.curl import curl, resolve
from tests.support.peers import tools_unavailable_reason
from tests.support.procs import Endpoint

TIMEOUT_S: Final = 90.0
GITHUB_SECRET: Final = "gh-webhook-secret"
STRIPE_SECRET: Final = "whsec_e2e_secret"
TOLERANCE_S: Final = 2  # the verifier's Stripe tolerance; Stripe's default is 300
SIGNERS_TOML: Final = (
    f'\n[[inspect.signers]]\nprovider = "github"\nsecret = "{GITHUB_SECRET}"\npath = "/github"\n'
    f'\n[[inspect.signers]]\nprovider = "stripe"\nsecret = "{STRIPE_SECRET}"\npath = "/stripe"\n'
    f"tolerance = {TOLERANCE_S}\n"
)
EVENT: Final = json.dumps({"id": "evt_1", "type": "invoice.paid", "data": {"amount": 42}})

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


@dataclass
class Verifier:
    """The app behind the tunnel: accepts a webhook only if its signature verifies."""

    verdicts: list[tuple[str, int, str]] = field(default_factory=list)  # (path, status, why)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def github(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        sent = request.headers.get("X-Hub-Signature-256", "")
        ok = hmac.compare_digest(expected, sent)
        return self._answer("/github", 200 if ok else 401, "ok" if ok else "bad signature")

    async def stripe(self, request: web.Request) -> web.Response:
        payload = (await request.read()).decode()
        header = request.headers.get("Stripe-Signature", "")
        try:
            stripe.WebhookSignature.verify_header(payload, header, STRIPE_SECRET, TOLERANCE_S)
        except stripe.SignatureVerificationError as exc:
            return self._answer("/stripe", 400, str(exc))
        return self._answer("/stripe", 200, "ok")

    def _answer(self, path: str, status: int, why: str) -> web.Response:
        self.verdicts.append((path, status, why))
        self.changed.set()
        return web.Response(status=status, text=why)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/github", self.github)
        app.router.add_post("/stripe", self.stripe)
        return app


async def post(public: Endpoint, path: str, header: str) -> int:
    """POST EVENT with one signature header through the tunnel; return the HTTP status."""
    result = await curl(
        *resolve(public.host, public.port),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Content-Type: application/json",
        "-H",
        header,
        "--data-binary",
        EVENT,
        f"{public.url}{path}",
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


async def past_tolerance(signed_at: int) -> None:
    """Wait until a signature made at `signed_at` is past the verifier's tolerance (the
    condition under test is the wall clock itself)."""
    await asyncio.sleep(max(0.0, signed_at + TOLERANCE_S + 1.1 - time.time()))


def stripe_header(timestamp: int) -> str:
    signed = f"{timestamp}.{EVENT}".encode()
    mac = hmac.new(STRIPE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return f"Stripe-Signature: t={timestamp},v1={mac}"


def github_header() -> str:
    mac = hmac.new(GITHUB_SECRET.encode(), EVENT.encode(), hashlib.sha256).hexdigest()
    return f"X-Hub-Signature-256: sha256={mac}"


async def replay(http: aiohttp.ClientSession, exchange_id: int, **edits: object) -> dict[str, Any]:
    async with http.post(f"/api/requests/{exchange_id}/replay", json=edits) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == 200, answer
        return answer


async def test_inspector_resigned_replays_pass_github_and_stripe_verifiers(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """Signatures shown valid; a stale verbatim Stripe replay is refused, re-signed accepted;
    an edited GitHub body passes only re-signed; repeat sends N times."""
    verifier = Verifier()
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(
            run_tunneld, run_tunnelc, local_app=verifier.app(), extra_client_toml=SIGNERS_TOML
        ) as (tunnel, _),
        aiohttp.ClientSession(tunnel.inspector) as http,
        http.get("/api/events") as events,
    ):
        await next_event(events, "hello")
        signed_at = int(time.time())
        assert await post(tunnel.public, "/stripe", stripe_header(signed_at)) == 200
        assert await post(tunnel.public, "/github", github_header()) == 200
        stripe_id = (await next_event(events, "updated", path="/stripe", status=200))["exchange"][
            "id"
        ]
        github_id = (await next_event(events, "updated", path="/github", status=200))["exchange"][
            "id"
        ]

        async with http.get(f"/api/requests/{stripe_id}") as response:
            signature = (await response.json())["signature"]
        assert signature["provider"] == "stripe" and signature["valid"] is True

        await past_tolerance(signed_at)
        verbatim = await replay(http, stripe_id)
        assert verbatim["status"] == 400
        assert "tolerance" in verifier.verdicts[-1][2]
        async with http.get(f"/api/requests/{stripe_id}") as response:
            assert "a verbatim replay is rejected" in (await response.json())["signature"]["detail"]
        resigned = await replay(http, stripe_id, resign=True)
        assert resigned["status"] == 200 and resigned["signature"]["valid"] is True
        assert verifier.verdicts[-1] == ("/stripe", 200, "ok")

        edited = {"body": EVENT.replace("42", "43")}
        assert (await replay(http, github_id, **edited))["status"] == 401
        assert (await replay(http, github_id, resign=True, **edited))["status"] == 200

        before = len(verifier.verdicts)
        repeated = await replay(http, stripe_id, resign=True, repeat=3)
        assert [r["status"] for r in repeated["repeats"]] == [200, 200, 200]
        assert [v[1] for v in verifier.verdicts[before:]] == [200, 200, 200]

        async with http.post(f"/api/requests/{stripe_id}/replay", json={"repeat": 101}) as response:
            assert response.status == 400
        async with http.get("/api/requests", params={"path": "/nothing-signed"}) as response:
            assert (await response.json())["requests"] == []


@pytest.mark.browser
@requires_chromium
async def test_inspector_page_shows_signature_and_replays_resigned(
    run_tunneld: Any, run_tunnelc: Any, screenshots: Path, patient_expect: None
) -> None:
    """In Chromium: the detail says the Stripe signature is valid; Replay re-signed gets 200."""
    verifier = Verifier()
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(
            run_tunneld, run_tunnelc, local_app=verifier.app(), extra_client_toml=SIGNERS_TOML
        ) as (tunnel, _),
        async_playwright() as playwright,
    ):
        signed_at = int(time.time())
        assert await post(tunnel.public, "/stripe", stripe_header(signed_at)) == 200
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 900})
            await page.goto(tunnel.inspector + "/")
            rows = page.get_by_test_id("request-row")
            await expect(rows).to_have_count(1)
            await rows.first.click()
            signature = page.get_by_test_id("signature")
            await expect(signature).to_contain_text("stripe signature valid")
            await expect(signature).to_have_attribute("data-valid", "true")
            await past_tolerance(signed_at)
            await page.get_by_test_id("replay-button").click()
            await expect(page.get_by_test_id("replay-result")).to_contain_text("Replayed: 400")
            await rows.last.click()
            await page.get_by_test_id("repeat-count").fill("2")
            await page.get_by_test_id("resign-button").click()
            await expect(page.get_by_test_id("replay-result")).to_contain_text(
                "Replayed re-signed 2 times: 200, 200"
            )
            await page.screenshot(path=str(screenshots / "inspector-resigned.png"))
        finally:
            await browser.close()
        assert [v[1] for v in verifier.verdicts] == [200, 400, 200, 200]
