"""HTTP and HTTPS proxies (server side): routes in the shared vhost listeners.

The vhost listeners (tunnel_server/vhost/) own the public ports and the HTTP work; a proxy
only claims its names in the router and opens one mux stream per upstream connection the
listener asks for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import TypedDict

from protocol.messages import BACKEND_PROTOCOLS, NewProxy
from protocol.proxytype import ProxyType

from ..errors import ProxyHeld
from ..groups import ProxyGroup
from ..offline import deliver_stored, offline_note
from ..pacing import PacedStream
from ..vhost.offline import OfflinePolicy
from ..vhost.routing import HTTPRoute, RouteConflict, RouteError, VhostRouter
from ..vhost.upstream import ByteStream, Opener, UpstreamError
from .base import ProxyContext, ProxyRefused
from .userconn import UserConnRefused, UserConns

logger = logging.getLogger(__name__)


class VhostProxy:
    """Common part: claim the route, open streams for the listener, release on close."""

    type: ProxyType
    scheme: str

    def __init__(self, ctx: ProxyContext, request: NewProxy, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.request = request
        self.public_urls: tuple[str, ...] = ()
        self.public_note = ""
        self._route: HTTPRoute | None = None
        self.conns = UserConns(
            ctx, name, self.scheme, holds_socket=False, compression=request.compression
        )
        self._delivery: asyncio.Task[None] | None = None  # stored requests, on reconnect
        self.group: ProxyGroup[VhostProxy] | None = None

    @property
    def available(self) -> bool:
        """A group member takes visitors while its client's session is open."""
        return not self.ctx.session.closed

    def _router(self) -> tuple[VhostRouter, int | None]:
        raise NotImplementedError

    def _route_for(self) -> HTTPRoute:
        """The route this proxy claims: its names and owner, plus the kind's `_route_options`."""
        return HTTPRoute(
            proxy_key=f"{self.ctx.client_id}/{self.name}",
            proxy_name=self.name,
            opener=self._open,
            user=self.ctx.user,
            client_id=self.ctx.client_id,
            domains=self.request.custom_domains,
            subdomain=self.request.subdomain or None,
            **self._route_options(),
        )

    def _route_options(self) -> RouteOptions:
        """The route's options beyond its names (HTTPS routes by SNI alone: none)."""
        return {}

    async def start(self) -> None:
        router, port = self._router()
        if self.request.group:
            await self._start_grouped(router, port)
            return
        offline = self.ctx.offline
        try:
            route = self._route_for()
            if offline is not None:
                offline.unpark(self.name)  # this proxy's client is back
            names = router.names_for(route)
            router.add(route)
        except RouteConflict as exc:
            raise ProxyHeld(exc.reason) from None
        except RouteError as exc:
            raise ProxyRefused(exc.reason) from None
        self._route = route
        if offline is not None and self.request.offline_capture:
            self._delivery = asyncio.create_task(
                deliver_stored(offline, self.name, self._open_now, self.ctx.config),
                name=f"offline-delivery-{self.name}",
            )
        self.public_urls = self._urls(names, port)

    async def _start_grouped(self, router: VhostRouter, port: int | None) -> None:
        """Join the group's shared route, adding it to the router for the first member."""
        ctx, request = self.ctx, self.request
        try:
            route = self._route_for()
            names = router.names_for(route)
        except RouteError as exc:
            raise ProxyRefused(exc.reason) from None
        face = f"{' '.join(names)} at {' '.join(route.locations)}"
        if route.route_by_http_user:
            face += f" for user {route.route_by_http_user}"
        assert ctx.groups is not None
        group = ctx.groups.join(
            self.scheme, ctx.user, request.group, request.group_key, face, self, ctx.client_id
        )
        self.group = group
        async with group.lock:
            if group.shared is None:
                shared = dataclasses.replace(
                    route,
                    proxy_key=f"group:{ctx.user}/{request.group}",
                    opener=_group_opener(group),
                )
                try:
                    router.add(shared)
                except RouteConflict as exc:
                    raise ProxyHeld(exc.reason) from None
                except RouteError as exc:
                    raise ProxyRefused(exc.reason) from None
                group.shared = shared
        self.public_urls = self._urls(names, port)

    def _urls(self, names: list[str], port: int | None) -> tuple[str, ...]:
        return _urls(self.scheme, names, port) if port is not None else ()

    def refresh_urls(self) -> bool:
        return False  # only terminated http proxies gain URLs later

    async def _open(self, src: tuple[str, int]) -> ByteStream:
        delivery = self._delivery
        if delivery is not None and not delivery.done():
            # The requests stored while the client was offline go first, so the app sees
            # everything in arrival order. The vhost bounds this wait (its opener timeout:
            # 504); asyncio.wait never cancels the delivery when this waiter is cancelled.
            logger.debug("tunneld: [proxy=%s] a request waits for the stored ones", self.name)
            await asyncio.wait({delivery})
        return await self._open_now(src)

    async def _open_now(self, src: tuple[str, int]) -> ByteStream:
        ctx = self.ctx
        if ctx.session.closed:
            raise UpstreamError("the tunnel client is offline")
        visitors = ctx.visitors
        screened = False
        if visitors is not None and visitors.plugins_check_user_conns:
            refusal = visitors.refusal(src[0])
            if refusal is not None:
                visitors.refused(self.scheme, src, refusal)
                raise UpstreamError(refusal.reason, status=refusal.status)
            if not await visitors.plugins_admit(src, self.scheme):
                raise UpstreamError("refused by a server plugin", status=403)
            screened = True
        try:
            stream = self.conns.open_stream(src, screened=screened)
        except UserConnRefused as exc:
            raise UpstreamError(exc.reason, status=exc.status) from None
        # The user's bandwidth quota (users/bandwidth.py): one bucket for all its proxies.
        pacer = visitors.throttle() if visitors is not None else None
        return PacedStream(stream, pacer) if pacer is not None else stream

    def close(self) -> None:
        if self._delivery is not None:
            self._delivery.cancel()
        group, self.group = self.group, None
        if group is not None and self.ctx.groups is not None:
            if self.ctx.groups.leave(group, self) and isinstance(group.shared, HTTPRoute):
                router, _ = self._router()
                router.remove(group.shared.proxy_key)
                group.shared = None
        if self._route is not None:
            router, _ = self._router()
            router.remove(self._route.proxy_key)
            offline = self.ctx.offline
            policy = self._offline_policy()
            if (
                policy is not None
                and offline is not None
                # The client went away (it did not remove us), or tunneld stops: either way
                # the client is offline until it logs in again.
                and (self.ctx.session.closed or offline.shutting_down)
            ):
                offline.park(self.name, router, self._route, policy)
            self._route = None
        self.conns.abort_all("proxy closed")

    def _offline_policy(self) -> OfflinePolicy | None:
        """What tunneld does while this proxy's client is offline (http only; None: nothing)."""
        r = self.request
        if not r.offline_status or self.type is not ProxyType.HTTP:
            return None
        return OfflinePolicy(r.offline_status, r.offline_body, r.offline_capture)

    async def wait_closed(self) -> None:
        if self._delivery is not None:
            # Cancelled in close(); gather collects that without re-raising it here.
            await asyncio.gather(self._delivery, return_exceptions=True)


class RouteOptions(TypedDict, total=False):
    """HTTPRoute's options beyond its names and owner (vhost/routing.py has their meaning)."""

    locations: Sequence[str]
    http_user: str | None
    http_password: str | None
    host_header_rewrite: str | None
    request_headers_set: Mapping[str, str]
    response_headers_set: Mapping[str, str]
    redirect_http: bool
    backend_h2c: bool
    route_by_http_user: str | None
    offline_note: str


def credential_options(request: NewProxy) -> RouteOptions:
    """httpUser/httpPassword and routeByHTTPUser: the http vhost reads them from Authorization,
    the tcpmux listener from Proxy-Authorization."""
    return {
        "http_user": request.http_user or None,
        "http_password": request.http_password or None,
        "route_by_http_user": request.route_by_http_user or None,
    }


def _group_opener(group: ProxyGroup[VhostProxy]) -> Opener:
    """The shared route's opener: the next member in the round (each opens and counts its own
    stream, with its own visitor rules)."""

    async def open_stream(src: tuple[str, int]) -> ByteStream:
        member = group.pick()
        if member is None:
            raise UpstreamError(f"no member of group {group.name!r} is online")
        return await member._open(src)

    return open_stream


def _backend_h2c(protocol: str) -> bool:
    if protocol not in BACKEND_PROTOCOLS:
        allowed = ", ".join(repr(p) for p in BACKEND_PROTOCOLS if p)
        raise ProxyRefused(f"backendProtocol must be one of {allowed}, got {protocol!r}")
    return protocol == "h2c"


def _with_hsts(headers: dict[str, str], max_age: int) -> dict[str, str]:
    """responseHeaders.set plus HSTS. Browsers ignore HSTS over plain HTTP (RFC 6797 section
    8.1), so one header set serves both vhosts; the user's own header wins."""
    if max_age <= 0 or any(k.lower() == "strict-transport-security" for k in headers):
        return headers
    return {**headers, "Strict-Transport-Security": f"max-age={max_age}"}


def _urls(scheme: str, names: list[str], port: int) -> tuple[str, ...]:
    default = 80 if scheme == "http" else 443
    suffix = "" if port == default else f":{port}"
    return tuple(f"{scheme}://{name}{suffix}" for name in names)


class HTTPProxy(VhostProxy):
    type = ProxyType.HTTP
    scheme = "http"

    def _router(self) -> tuple[VhostRouter, int | None]:
        # The router exists when vhostHTTPPort is set, or when the HTTPS edge terminates TLS.
        if self.ctx.http_router is None:
            raise ProxyRefused("this server has no HTTP vhost (vhostHTTPPort is not set)")
        return self.ctx.http_router, self.ctx.http_port

    def _urls(self, names: list[str], port: int | None) -> tuple[str, ...]:
        urls = _urls("http", names, port) if port is not None else ()
        edge, https_port = self.ctx.edge, self.ctx.https_port
        if edge is None or https_port is None:
            return urls
        ready, notes = [], []
        for name in names:
            if name.startswith("*"):
                continue  # a wildcard or catch-all route has no single URL to show
            state, detail = edge.https_state(name)
            if state == "ready":
                ready.append(name)
            elif state in ("pending", "failed"):
                notes.append(f"https pending certificate for {name}")
            else:
                notes.append(f"no https for {name}: {detail}")
        self.public_note = "; ".join(notes)
        return urls + _urls("https", ready, https_port)

    def refresh_urls(self) -> bool:
        """Recompute the public URLs (a certificate arrived); True if they changed."""
        if self._route is None or self.ctx.http_router is None:
            return False
        before = (self.public_urls, self.public_note)
        names = self.ctx.http_router.names_for(self._route)
        self.public_urls = self._urls(names, self.ctx.http_port)
        return (self.public_urls, self.public_note) != before

    def _route_options(self) -> RouteOptions:
        r = self.request
        return {
            **credential_options(r),
            "locations": r.locations or ("/",),
            "host_header_rewrite": r.host_header_rewrite or None,
            "request_headers_set": r.request_headers,
            "response_headers_set": _with_hsts(r.response_headers, r.hsts_max_age),
            "redirect_http": r.redirect_http,
            "backend_h2c": _backend_h2c(r.backend_protocol),
            "offline_note": offline_note(
                self._offline_policy(), self.ctx.offline.limits if self.ctx.offline else None
            ),
        }


class HTTPSProxy(VhostProxy):
    type = ProxyType.HTTPS
    scheme = "https"

    def _router(self) -> tuple[VhostRouter, int | None]:
        if self.ctx.https_router is None or self.ctx.https_port is None:
            raise ProxyRefused("this server has no HTTPS vhost (vhostHTTPSPort is not set)")
        return self.ctx.https_router, self.ctx.https_port
