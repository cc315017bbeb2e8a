"""Access control for every web surface (the server dashboard, the client admin API and the
inspector): basic auth, cross-site guards, response headers. Shared here because the server
and the client never import each other.

Threats this covers, beyond a password:
- DNS rebinding: a hostile page that re-points its own name at 127.0.0.1 could read an
  unauthenticated loopback web page. Without credentials we therefore only answer requests
  whose Host is ``localhost`` or an IP literal.
- Cross-site requests (CSRF): a page from another origin, or another port on the same host,
  must not trigger actions. Every state change is a POST (no endpoint changes state on GET,
  and other methods get 405), and a POST is refused when it is a navigation (a form), when the
  browser marks it anything but ``Sec-Fetch-Site: same-origin``/``none``, or when its
  ``Origin`` is not this server's. Sub-resource requests that a browser marks
  ``cross-site``/``same-site`` are refused. Top-level GET navigations (typing the URL,
  following a link) stay allowed: they only read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import importlib.resources
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web

from tunnel_common.webbind import auth_enabled

REALM: Final = "tunnelkit"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Reads are GET (HEAD, OPTIONS); every state change is a POST, never a GET (issue #8).
ALLOWED_METHODS: Final = SAFE_METHODS | {"POST"}
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def basic_auth_ok(header: str | None, user: str, password: str) -> bool:
    """Check an ``Authorization`` header against the credentials in constant time."""
    if not header:
        return False
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    got_user, sep, got_password = decoded.partition(b":")
    if not sep:
        return False
    # Compare both parts every time so the timing does not reveal which one was wrong.
    user_ok = hmac.compare_digest(got_user, user.encode())
    password_ok = hmac.compare_digest(got_password, password.encode())
    return user_ok & password_ok


def _host_name(host_header: str) -> str:
    """Strip the port from a Host header value ("[::1]:80" -> "::1", "a:80" -> "a")."""
    if host_header.startswith("["):
        end = host_header.find("]")
        return host_header[1:end] if end > 0 else host_header
    if host_header.count(":") == 1:
        return host_header.rsplit(":", 1)[0]
    return host_header


def _is_local_host_header(host_header: str) -> bool:
    host = _host_name(host_header).lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_cross_site(request: web.Request) -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site in ("cross-site", "same-site"):
        if request.headers.get("Sec-Fetch-Mode") != "navigate" or request.method != "GET":
            return True
    if request.method not in SAFE_METHODS:
        # A state change: only from this origin's own page or from a non-browser client
        # (no Sec-Fetch-Site, no Origin). A navigation (a cross-site form POST) is refused
        # even when the browser does not say where it came from.
        if fetch_site not in (None, "same-origin", "none"):
            return True
        if request.headers.get("Sec-Fetch-Mode") == "navigate":
            return True
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return True
    return False


def _unauthorized() -> web.Response:
    return web.Response(
        status=401,
        text="401: authentication required\n",
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )


def _forbidden(reason: str) -> web.Response:
    return web.Response(status=403, text=f"403: {reason}\n")


def install_guard(
    app: web.Application,
    *,
    user: str | None,
    password: str | None,
    open_paths: frozenset[str],
) -> None:
    """Add the auth middleware and security headers to `app` (call before it starts)."""
    need_auth = auth_enabled(user, password)
    expected_user = user or ""
    expected_password = password or ""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        if need_auth:
            if not basic_auth_ok(
                request.headers.get("Authorization"), expected_user, expected_password
            ):
                return _unauthorized()
        elif not _is_local_host_header(request.host):
            return _forbidden("this address has no credentials, so it answers only localhost")
        if request.method not in ALLOWED_METHODS:
            # State-changing endpoints accept POST only; nothing answers PUT, DELETE, ...
            return web.Response(status=405, text="405: use GET to read and POST to change\n")
        if _is_cross_site(request):
            return _forbidden("cross-site request refused")
        return await handler(request)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("Cache-Control", "no-store")

    app.middlewares.append(guard)
    app.on_response_prepare.append(add_headers)


def page_routes(package: str, page: str, assets: Mapping[str, str]) -> list[web.RouteDef]:
    """Routes for a one-page app: `/` (the page), `/static/{name}` and an open `/healthz`.

    Files are read once from `package`'s `static/` folder, so the pages need no CDN and work
    offline; `assets` maps file name to content type.
    """
    folder = importlib.resources.files(package).joinpath("static")
    body = folder.joinpath(page).read_bytes()
    files = {name: (folder.joinpath(name).read_bytes(), kind) for name, kind in assets.items()}

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        data, content_type = found
        return web.Response(body=data, content_type=content_type, charset="utf-8")

    return [web.get("/", index), web.get("/static/{name}", static), healthz_route()]


def healthz_route() -> web.RouteDef:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    return web.get("/healthz", healthz)
