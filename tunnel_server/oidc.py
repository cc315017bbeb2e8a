"""OIDC login (`auth.method = "oidc"`, frp's): verify the client's access token, a JWT.

The issuer's keys come from its discovery document (`ISSUER/.well-known/openid-configuration`,
its `jwks_uri`), fetched with aiohttp and cached for JWKS_CACHE_S; a token signed with a key id
the cache does not know triggers one refetch (the issuer rotated its keys), at most once per
JWKS_REFETCH_MIN_S. PyJWT checks the signature, `exp`, `aud` (auth.oidc.audience, when set)
and `iss` (the issuer, unless skipIssuerCheck). Only asymmetric algorithms are accepted, so a
token cannot be "signed" with the public key as an HMAC secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from .config import ServerConfig

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger(__name__)

ALGORITHMS: Final = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")
JWKS_CACHE_S: Final = 3600.0
JWKS_REFETCH_MIN_S: Final = 30.0  # an unknown key id refetches at most this often
FETCH_TIMEOUT_S: Final = 10.0
MAX_DOCUMENT_BYTES: Final = 256 * 1024


class OIDCError(Exception):
    """The token is not acceptable; the message is one line for the log and the client."""


class OIDCVerifier:
    def __init__(self, config: ServerConfig) -> None:
        self.issuer_claim = config.oidc_issuer  # `iss` must equal it exactly, as configured
        self.issuer = config.oidc_issuer.rstrip("/")
        self.audience = config.oidc_audience
        self.skip_expiry = config.oidc_skip_expiry
        self.skip_issuer = config.oidc_skip_issuer
        self._keys: dict[str, Any] = {}
        self._fetched_at = -JWKS_CACHE_S
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _get_json(self, url: str) -> dict[str, Any]:
        import aiohttp  # aiohttp and jwt load with OIDC: a server without it starts lighter

        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S))
        async with self._http.get(url) as response:
            if response.status != 200:
                raise OIDCError(f"{url} answered HTTP {response.status}")
            raw = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise OIDCError(f"{url} is over {MAX_DOCUMENT_BYTES} bytes")
        try:
            data = json.loads(raw)
        except ValueError:
            raise OIDCError(f"{url} did not answer JSON") from None
        if not isinstance(data, dict):
            raise OIDCError(f"{url} did not answer a JSON object")
        return data

    async def _refresh(self, force: bool) -> None:
        import aiohttp
        import jwt

        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if (not force and age < JWKS_CACHE_S) or (force and age < JWKS_REFETCH_MIN_S):
                return
            try:
                discovery = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
                jwks_uri = discovery.get("jwks_uri")
                if not isinstance(jwks_uri, str):
                    raise OIDCError("the issuer's discovery document has no jwks_uri")
                jwks = jwt.PyJWKSet.from_dict(await self._get_json(jwks_uri))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                what = str(exc) or type(exc).__name__
                raise OIDCError(f"cannot reach the OIDC issuer: {what}") from None
            except jwt.PyJWKSetError as exc:
                raise OIDCError(f"the issuer's JWKS is unusable: {exc}") from None
            self._keys = {key.key_id: key for key in jwks.keys if key.key_id}
            self._fetched_at = time.monotonic()
            logger.info("tunneld: OIDC keys loaded from %s (%d keys)", jwks_uri, len(self._keys))

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or OIDCError naming what is wrong."""
        import jwt

        if not token:
            raise OIDCError("no OIDC token in the login")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise OIDCError(f"malformed token: {exc}") from None
        kid = header.get("kid")
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)
        key = self._keys.get(kid) if kid else None
        if key is None:
            raise OIDCError(f"the token's key id {kid!r} is not among the issuer's keys")
        options: dict[str, Any] = {
            "verify_exp": not self.skip_expiry,
            "verify_aud": bool(self.audience),
            "verify_iss": not self.skip_issuer,
            "require": ["exp"] if not self.skip_expiry else [],
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=list(ALGORITHMS),
                audience=self.audience or None,
                issuer=None if self.skip_issuer else self.issuer_claim,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.PyJWTError as exc:
            raise OIDCError(f"token rejected: {exc}") from None
        return claims
