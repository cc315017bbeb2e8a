"""tcpmux proxy (server side, frp's `type = "tcpmux"`, `multiplexer = "httpconnect"`): a route
in the tcpmux listener (vhost/tcpmux.py), chosen by the host of the visitor's CONNECT.

The route, its claims on names (shared with http and https: a name belongs to one user), the
user-connection path and load-balancing groups are the vhost proxies'; only the router, the
public URL and the route's options differ.
"""

from __future__ import annotations

from protocol.proxytype import ProxyType

from ..vhost.routing import VhostRouter
from .base import ProxyRefused
from .http import RouteOptions, VhostProxy, credential_options


class TCPMuxProxy(VhostProxy):
    type = ProxyType.TCPMUX
    scheme = "tcpmux"

    def _router(self) -> tuple[VhostRouter, int | None]:
        if self.ctx.tcpmux_router is None or self.ctx.tcpmux_port is None:
            raise ProxyRefused("this server has no tcpmux port (tcpmuxHTTPConnectPort is not set)")
        return self.ctx.tcpmux_router, self.ctx.tcpmux_port

    def _urls(self, names: list[str], port: int | None) -> tuple[str, ...]:
        # What a visitor asks for: CONNECT name:anyport through the server's tcpmux port.
        return tuple(f"httpconnect://{name}:{port}" for name in names) if port else ()

    def _route_options(self) -> RouteOptions:
        return credential_options(self.request)
