"""Each public visitor of a proxy: admitted or refused, then written to the access log.

`Visitors` is made per proxy by the server (`TunnelServer.proxy_context`). The proxies ask it
before opening a stream (`refusal(ip)`), and tell it when a connection or request ends. Refusal
order: the server-wide IP rules, the proxy's own rules (set by the client), then the user's
concurrent-connection quota. Every refusal is counted on the proxy's `refused_visitors` and
logged at debug (a flood of refusals must not flood the log).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol.aio.stream import MuxStream
from tunnel_common.iprules import IPRules
from tunnel_common.throttle import Throttle

from .accesslog import AccessLog
from .pluginops import user_conn_content
from .plugins import PluginRejected
from .stats import ProxyCounters
from .users.quota import connection_refusal
from .vhost.access import RequestRecord

if TYPE_CHECKING:
    from .server import TunnelServer

logger = logging.getLogger(__name__)

STATUS_FORBIDDEN = 403  # refused by an IP rule
STATUS_BUSY = 503  # refused by a connection quota


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # the HTTP status an HTTP visitor gets
    reason: str


class Visitors:
    def __init__(
        self,
        server: TunnelServer,
        proxy: str,
        user: str,
        rules: IPRules,
        counters: ProxyCounters,
        plugin_user: dict[str, Any] | None = None,
    ) -> None:
        self._server = server
        self.proxy = proxy
        self.user = user
        self.rules = rules
        self._counters = counters
        self.plugin_user = plugin_user or {}  # frp's "user" object for plugin bodies
        self._started: dict[MuxStream, float] = {}  # bounded by the proxy's open streams

    @property
    def access(self) -> AccessLog | None:
        return self._server.access_log

    def refusal(self, ip: str) -> Refusal | None:
        """Why a visitor from `ip` may not in (None = admit)."""
        refusal: Refusal | None = None
        if not self._server.ip_rules.permits(ip):
            refusal = Refusal(STATUS_FORBIDDEN, "your address is not allowed on this server")
        elif not self.rules.permits(ip):
            refusal = Refusal(STATUS_FORBIDDEN, "your address is not allowed by this tunnel")
        else:
            record = self._server.users.record(self.user)
            reason = connection_refusal(self._server, record) if record is not None else ""
            if reason:
                refusal = Refusal(STATUS_BUSY, reason)
        if refusal is not None:
            self._counters.refused_visitors += 1
            logger.debug("[proxy=%s] visitor %s refused: %s", self.proxy, ip, refusal.reason)
        return refusal

    def throttle(self) -> Throttle | None:
        """The user's bandwidth quota bucket (users/bandwidth.py), or None (no quota)."""
        return self._server.users.throttles.get(self.user)

    @property
    def plugins_check_user_conns(self) -> bool:
        return self._server.plugins.handles("NewUserConn")

    async def plugins_admit(self, src: tuple[str, int], proxy_type: str) -> bool:
        """Ask the NewUserConn plugins about this visitor; False (logged, counted) = refused."""
        try:
            await self._server.plugins.call(
                "NewUserConn", user_conn_content(self.plugin_user, self.proxy, proxy_type, src)
            )
        except PluginRejected as exc:
            self._counters.refused_visitors += 1
            self.refused(proxy_type, src, Refusal(STATUS_FORBIDDEN, exc.reason))
            return False
        return True

    def opened(self, stream: MuxStream) -> None:
        self._started[stream] = time.monotonic()

    def closed(self, stream: MuxStream) -> None:
        """A tcp visitor's connection ended: one access line."""
        started = self._started.pop(stream, None)
        access = self.access
        if started is None or access is None:
            return
        header = stream.header
        access.write(
            {
                "kind": "tcp",
                "src": f"{header.src_addr}:{header.src_port}",
                "proxy": self.proxy,
                "user": self.user,
                "bytes_in": stream.bytes_out,  # towards the client's service
                "bytes_out": stream.bytes_in,
                "duration": time.monotonic() - started,
            }
        )

    def request_done(self, record: RequestRecord) -> None:
        """An HTTP request was answered through this proxy: one access line."""
        access = self.access
        if access is None:
            return
        access.write(
            {
                "kind": "http",
                "src": f"{record.peer[0]}:{record.peer[1]}",
                "proxy": self.proxy,
                "user": self.user,
                "method": record.method,
                "host": record.host,
                "path": record.path,
                "status": record.status,
                "bytes_in": record.bytes_in,
                "bytes_out": record.bytes_out,
                "latency": record.seconds,
            }
        )

    def refused(self, kind: str, src: tuple[str, int], refusal: Refusal) -> None:
        access = self.access
        if access is not None:
            access.write(
                {
                    "kind": kind,
                    "src": f"{src[0]}:{src[1]}",
                    "proxy": self.proxy,
                    "user": self.user,
                    "refused": refusal.reason,
                }
            )
