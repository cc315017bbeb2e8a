"""HTTP and HTTPS proxies (server side): routes in the shared vhost listeners.

The vhost listeners (tunnel_server/vhost/) own the public ports and the HTTP work; a proxy
only claims its names in the router and opens one mux stream per upstream connection the
listener asks for.
"""

from __future__ import annotations

import asyncio
import logging

from protocol.aio.stream import MuxStream
from protocol.errors import LocalProtocolError
from protocol.messages import NewProxy, StreamHeader
from protocol.proxytype import ProxyType

from ..errors import ProxyHeld
from ..offline import deliver_stored
from ..vhost.offline import OfflinePolicy
from ..vhost.routing import HTTPRoute, RouteConflict, RouteError, VhostRouter
from ..vhost.upstream import ByteStream, UpstreamError
from .base import ProxyContext, ProxyRefused

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
        self._route: HTTPRoute | None = None
        self._streams: set[MuxStream] = set()
        self._delivery: asyncio.Task[None] | None = None  # stored requests, on reconnect

    def _router(self) -> tuple[VhostRouter, int]:
        raise NotImplementedError

    def _route_for(self) -> HTTPRoute:
        raise NotImplementedError

    async def start(self) -> None:
        router, port = self._router()
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
                deliver_stored(offline, self.name, self._open, self.ctx.config),
                name=f"offline-delivery-{self.name}",
            )
        default = 80 if self.scheme == "http" else 443
        suffix = "" if port == default else f":{port}"
        self.public_urls = tuple(f"{self.scheme}://{name}{suffix}" for name in names)

    async def _open(self, src: tuple[str, int]) -> ByteStream:
        ctx = self.ctx
        if ctx.session.closed:
            raise UpstreamError("the tunnel client is offline")
        if len(self._streams) >= ctx.config.max_streams_per_proxy:
            # One proxy's flood must not use up its client's other proxies' streams.
            ctx.counters.refused_flows += 1
            raise UpstreamError(
                f"this proxy has {len(self._streams)} open connections (maxStreamsPerProxy)"
            )
        try:
            stream = ctx.session.open_stream(StreamHeader(ctx.local_name, src[0], src[1]))
        except (LocalProtocolError, ConnectionError) as exc:
            raise UpstreamError(f"the tunnel client cannot take more connections: {exc}") from None
        stream.set_accept_deadline(ctx.config.user_conn_timeout)
        counters = ctx.counters
        stream.counters = counters
        counters.connections_total += 1
        counters.connections_active += 1
        self._streams.add(stream)
        stream.add_close_callback(self._closed)
        return stream

    def _closed(self, stream: MuxStream) -> None:
        self._streams.discard(stream)
        self.ctx.counters.connections_active -= 1

    def close(self) -> None:
        if self._delivery is not None:
            self._delivery.cancel()
        if self._route is not None:
            router, _ = self._router()
            router.remove(self._route.proxy_key)
            request, offline = self.request, self.ctx.offline
            if (
                request.offline_status
                and offline is not None
                and self.ctx.session.closed  # the client went away; it did not remove us
                and self.type is ProxyType.HTTP
            ):
                policy = OfflinePolicy(
                    request.offline_status, request.offline_body, request.offline_capture
                )
                offline.park(self.name, router, self._route, policy)
            self._route = None
        for stream in list(self._streams):
            stream.abort(reason="proxy closed")

    async def wait_closed(self) -> None:
        if self._delivery is not None:
            # Cancelled in close(); gather collects that without re-raising it here.
            await asyncio.gather(self._delivery, return_exceptions=True)


class HTTPProxy(VhostProxy):
    type = ProxyType.HTTP
    scheme = "http"

    def _router(self) -> tuple[VhostRouter, int]:
        if self.ctx.http_router is None or self.ctx.http_port is None:
            raise ProxyRefused("this server has no HTTP vhost (vhostHTTPPort is not set)")
        return self.ctx.http_router, self.ctx.http_port

    def _route_for(self) -> HTTPRoute:
        r = self.request
        return HTTPRoute(
            proxy_key=f"{self.ctx.client_id}/{self.name}",
            proxy_name=self.name,
            opener=self._open,
            user=self.ctx.user,
            client_id=self.ctx.client_id,
            domains=r.custom_domains,
            subdomain=r.subdomain or None,
            locations=r.locations or ("/",),
            http_user=r.http_user or None,
            http_password=r.http_password or None,
            host_header_rewrite=r.host_header_rewrite or None,
            request_headers_set=r.request_headers,
            response_headers_set=r.response_headers,
            route_by_http_user=r.route_by_http_user or None,
        )


class HTTPSProxy(VhostProxy):
    type = ProxyType.HTTPS
    scheme = "https"

    def _router(self) -> tuple[VhostRouter, int]:
        if self.ctx.https_router is None or self.ctx.https_port is None:
            raise ProxyRefused("this server has no HTTPS vhost (vhostHTTPSPort is not set)")
        return self.ctx.https_router, self.ctx.https_port

    def _route_for(self) -> HTTPRoute:
        r = self.request
        return HTTPRoute(
            proxy_key=f"{self.ctx.client_id}/{self.name}",
            proxy_name=self.name,
            opener=self._open,
            user=self.ctx.user,
            client_id=self.ctx.client_id,
            domains=r.custom_domains,
            subdomain=r.subdomain or None,
        )
