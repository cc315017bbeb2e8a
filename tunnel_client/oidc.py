"""OIDC login on the client (`auth.method = "oidc"`, frp's): the OAuth2 client-credentials
grant, posted with aiohttp to auth.oidc.tokenEndpointURL; the access token goes to the server
in the Login message. A token is reused until REFRESH_BEFORE_EXPIRY_S before it expires.
"""

from __future__ import annotations

import json
import time
from typing import Final

from .config import ClientConfig

FETCH_TIMEOUT_S: Final = 10.0
REFRESH_BEFORE_EXPIRY_S: Final = 30.0
DEFAULT_LIFETIME_S: Final = 300.0  # when the endpoint does not say (expires_in)
MAX_ANSWER_BYTES: Final = 64 * 1024


class OIDCTokenError(Exception):
    """No token: the message names the endpoint and what it said."""


class OIDCTokenSource:
    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._token = ""
        self._expires = 0.0

    async def token(self) -> str:
        if self._token and time.monotonic() < self._expires - REFRESH_BEFORE_EXPIRY_S:
            return self._token
        cfg = self._config
        form = {
            "grant_type": "client_credentials",
            "client_id": cfg.oidc_client_id,
            "client_secret": cfg.oidc_client_secret.reveal() if cfg.oidc_client_secret else "",
            **cfg.oidc_params,
        }
        if cfg.oidc_audience:
            form["audience"] = cfg.oidc_audience
        if cfg.oidc_scope:
            form["scope"] = cfg.oidc_scope
        url = cfg.oidc_token_endpoint
        import aiohttp  # here: a client without OIDC never loads it (a lighter start)

        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)) as http,
                http.post(url, data=form, headers={"Accept": "application/json"}) as response,
            ):
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise OIDCTokenError(
                f"cannot reach the OIDC token endpoint {url}: {str(exc) or type(exc).__name__}"
            ) from None
        try:
            answer = json.loads(raw) if len(raw) <= MAX_ANSWER_BYTES else None
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise OIDCTokenError(
                f"the OIDC token endpoint {url} refused the client credentials "
                f"(HTTP {status}{', ' + str(error) if error else ''})"
            )
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise OIDCTokenError(f"the OIDC token endpoint {url} answered no access_token")
        lifetime = answer.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_LIFETIME_S
        self._token, self._expires = token, time.monotonic() + seconds
        return token
