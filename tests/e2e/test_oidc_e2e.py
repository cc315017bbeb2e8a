"""OIDC login (auth.method = "oidc") against a local issuer this test starts: discovery,
JWKS and a client-credentials token endpoint, with RSA keys made here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.test_tcp_e2e import server_toml
from tunnel_server.config import ServerConfig
from tunnel_server.oidc import OIDCError, OIDCVerifier

CLIENT_ID, CLIENT_SECRET, AUDIENCE = "tunnelc-ci", "s3cret-cred", "tunneld"


@dataclass
class Issuer:
    url: str = ""
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = "k1"
    audience: str = AUDIENCE
    jwks_fetches: int = 0
    tokens_issued: int = 0

    def jwk(self) -> dict[str, object]:
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.url,
                "jwks_uri": f"{self.url}/jwks",
                "token_endpoint": f"{self.url}/token",
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [self.jwk()]})

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != CLIENT_ID
            or form.get("client_secret") != CLIENT_SECRET
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": CLIENT_ID,
            "aud": self.audience,
            "iat": now,
            "exp": now + 300,
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        self.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 300})


@contextlib.asynccontextmanager
async def oidc_issuer() -> AsyncIterator[Issuer]:
    issuer = Issuer()
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", issuer.discovery)
    app.router.add_get("/jwks", issuer.jwks)
    app.router.add_post("/token", issuer.token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    issuer.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield issuer
    finally:
        await runner.cleanup()


def oidc_server_toml(issuer: Issuer) -> str:
    base = server_toml().replace('auth.token = "e2e-token-123"\n', "")
    return (
        base
        + f'auth.method = "oidc"\nauth.oidc.issuer = "{issuer.url}"\n'
        + f'auth.oidc.audience = "{AUDIENCE}"\n'
    )


def oidc_client_toml(port: int, fingerprint: str, issuer: Issuer, secret: str) -> str:
    return (
        f'serverAddr = "127.0.0.1"\nserverPort = {port}\n'
        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
        f'auth.method = "oidc"\nauth.oidc.clientID = "{CLIENT_ID}"\n'
        f'auth.oidc.clientSecret = "{secret}"\nauth.oidc.audience = "{AUDIENCE}"\n'
        f'auth.oidc.tokenEndpointURL = "{issuer.url}/token"\n'
    )


async def test_oidc_login_with_client_credentials(run_tunneld, run_tunnelc) -> None:
    """A client with good credentials logs in; the server fetched the JWKS once."""
    async with asyncio.timeout(60), oidc_issuer() as issuer:
        server = await run_tunneld(oidc_server_toml(issuer))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        await run_tunnelc(oidc_client_toml(port, fp, issuer, CLIENT_SECRET))
        await run_tunnelc(oidc_client_toml(port, fp, issuer, CLIENT_SECRET))
        assert issuer.tokens_issued == 2 and issuer.jwks_fetches == 1  # the keys are cached


async def test_oidc_wrong_secret_and_wrong_audience_are_refused(run_tunneld, run_tunnelc) -> None:
    """Bad client credentials stop at the token endpoint; a token for another audience is
    refused by tunneld with the reason, and the failure is logged in the fixed format."""
    async with asyncio.timeout(60), oidc_issuer() as issuer:
        server = await run_tunneld(oidc_server_toml(issuer))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        bad = await run_tunnelc(
            oidc_client_toml(port, fp, issuer, "nope"), wait_ready=False, expect_exit_code=1
        )
        await bad.wait_for(r"refused the client credentials \(HTTP 401, invalid_client\)")
        assert await bad.wait(30) == 1
        issuer.audience = "someone-else"
        other = await run_tunnelc(
            oidc_client_toml(port, fp, issuer, CLIENT_SECRET), wait_ready=False, expect_exit_code=1
        )
        await other.wait_for(r"authentication failed: token rejected: .*[Aa]udience")
        assert await other.wait(30) == 1
        await server.wait_for(
            r'login failed: ip=127\.0\.0\.1 port=\d+ user="" .*reason="token rejected'
        )


async def test_oidc_forged_token_is_refused() -> None:
    """A token signed with another key under the issuer's key id is refused (the signature)."""
    async with asyncio.timeout(60), oidc_issuer() as issuer:
        verifier = OIDCVerifier(
            ServerConfig(auth_method="oidc", oidc_issuer=issuer.url, oidc_audience=AUDIENCE)
        )
        try:
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            now = int(time.time())
            claims = {"iss": issuer.url, "aud": AUDIENCE, "exp": now + 60}
            forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": issuer.kid})
            try:
                await verifier.verify(forged)
            except OIDCError as exc:
                assert "Signature verification failed" in str(exc)
            else:
                raise AssertionError("a forged token was accepted")
            good = jwt.encode(claims, issuer.key, algorithm="RS256", headers={"kid": issuer.kid})
            assert (await verifier.verify(good))["aud"] == AUDIENCE
        finally:
            await verifier.aclose()


async def test_oidc_with_auth_token_proves_the_server_first(run_tunneld, run_tunnelc) -> None:
    """auth.token beside OIDC keys the login proofs: the same token on both sides logs in (the
    OIDC token still checked); another token stops at the server's proof, before the bearer
    token leaves the client; a good secret with a token for another audience is refused."""
    shared = 'auth.token = "oidc-and-a-secret"\n'
    async with asyncio.timeout(90), oidc_issuer() as issuer:
        server = await run_tunneld(oidc_server_toml(issuer) + shared)
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        await run_tunnelc(oidc_client_toml(port, fp, issuer, CLIENT_SECRET) + shared)
        await server.wait_for(r"client \S+ logged in from")
        for extra in ('auth.token = "another-secret"\n', ""):
            bad = await run_tunnelc(
                oidc_client_toml(port, fp, issuer, CLIENT_SECRET) + extra,
                wait_ready=False,
                expect_exit_code=1,
            )
            await bad.wait_for(r"could not prove that it knows the token.*nothing was sent")
            assert await bad.wait(30) == 1
        issuer.audience = "someone-else"
        other = await run_tunnelc(
            oidc_client_toml(port, fp, issuer, CLIENT_SECRET) + shared,
            wait_ready=False,
            expect_exit_code=1,
        )
        await other.wait_for(r"authentication failed: token rejected: .*[Aa]udience")
        assert await other.wait(30) == 1


async def test_oidc_alone_sends_its_token_only_to_a_verified_server(
    run_tunneld, run_tunnelc
) -> None:
    """Without auth.token nothing the server sends can prove it, so a client that would trust
    on first use refuses the real server too, naming its fingerprint; pinned, it logs in."""
    async with asyncio.timeout(90), oidc_issuer() as issuer:
        server = await run_tunneld(oidc_server_toml(issuer))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        unpinned = oidc_client_toml(port, fp, issuer, CLIENT_SECRET).replace(
            f'transport.tls.serverFingerprint = "{fp}"\n', ""
        )
        refused = await run_tunnelc(unpinned, wait_ready=False, expect_exit_code=1)
        match = await refused.wait_for(r"presented (SHA256:[0-9A-F:]+), which neither")
        assert match[1] == fp
        assert await refused.wait(30) == 1
        await run_tunnelc(oidc_client_toml(port, fp, issuer, CLIENT_SECRET))
