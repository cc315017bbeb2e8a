"""TCP proxy (client side): dial the local service for each stream and splice, or hand the
stream to the proxy's plugin (`tunnel_client.plugins`) when it has one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Final

from protocol.aio.connection import MuxSession
from protocol.aio.localdial import LocalDials
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.compression import NO_COMPRESSION, ZSTD
from protocol.messages import NewProxy
from protocol.proxytype import ProxyType
from protocol.visitorauth import secret_verifier
from tunnel_common.throttle import Throttle

from ..config import ProxyConfig
from ..inspect.store import CaptureStore
from ..plugins import ClientPlugin, make_plugin
from ..proxyheader import proxy_header
from .base import LOCAL_DIAL_TIMEOUT_S, PreambleSplice, public_port

logger = logging.getLogger(__name__)

LOCAL_ERROR_LOG_INTERVAL_S: Final = 10.0  # one log line per proxy this often, at most


def new_proxy_request(config: ProxyConfig) -> NewProxy:
    return NewProxy(
        name=config.name,
        type=str(config.type),
        remote_port=config.remote_port or 0,
        custom_domains=tuple(config.custom_domains),
        subdomain=config.subdomain or "",
        locations=tuple(config.locations),
        http_user=config.http_user or "",
        http_password=config.http_password.reveal() if config.http_password else "",
        host_header_rewrite=config.host_header_rewrite or "",
        request_headers=dict(config.request_headers_set),
        response_headers=dict(config.response_headers_set),
        redirect_http=bool(config.redirect_http),
        hsts_max_age=config.hsts_max_age or 0,
        backend_protocol=config.backend_protocol or "",
        route_by_http_user=config.route_by_http_user or "",
        metadatas=dict(config.metadatas),
        annotations=dict(config.annotations),
        bandwidth_limit=(
            config.transport.bandwidth_limit or 0
            if config.transport.bandwidth_limit_mode == "server"
            else 0
        ),
        # Capturing while offline needs an answer for the provider: 200 unless one is set.
        offline_status=config.offline_status or (200 if config.offline_capture else 0),
        offline_body=config.offline_body or "",
        offline_capture=bool(config.offline_capture),
        allow_ips=config.allow_ips,
        deny_ips=config.deny_ips,
        # Datagrams are never compressed: a udp proxy has no streams to compress.
        compression=(
            ZSTD
            if config.transport.use_compression and config.type != ProxyType.UDP
            else NO_COMPRESSION
        ),
        group=config.group or "",
        group_key=config.group_key.reveal() if config.group_key else "",
        secret_verifier=(
            secret_verifier(config.secret_key.reveal(), config.name) if config.secret_key else b""
        ),
        allow_users=config.allow_users,
    )


class TCPProxy:
    """Each stream: dial localIP:localPort, accept on success, reset with the reason if not."""

    def __init__(self, config: ProxyConfig, store: CaptureStore | None = None) -> None:
        self.config = config
        self._tasks: set[asyncio.Task[object]] = set()
        self._dials: LocalDials | None = None  # made on the first stream, on its loop
        # An http proxy's stream is plain HTTP: HTTPProxy captures it itself, plugin or not.
        capture = None
        if store is not None and config.type != ProxyType.HTTP:
            capture = (store, config.name)
        self.plugin: ClientPlugin | None = (
            make_plugin(config.plugin, config.type, capture) if config.plugin is not None else None
        )
        limit = config.transport.bandwidth_limit
        paced_here = limit is not None and config.transport.bandwidth_limit_mode == "client"
        self.throttle: Throttle | None = Throttle(limit) if limit and paced_here else None
        self.public_port = 0
        self.local_error: str | None = None  # why the last local dial failed (None: it worked)
        self._last_local_log = -LOCAL_ERROR_LOG_INTERVAL_S
        self._unlogged_failures = 0

    def new_proxy_request(self) -> NewProxy:
        return new_proxy_request(self.config)

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        if self.plugin is not None:
            self.spawn(self.plugin.serve(stream, self.splice))
            return
        # No task per connection: the dial is driven from its futures' callbacks and timed
        # by one deadline table per proxy (protocol/aio/localdial.py).
        dials = self._dials
        if dials is None or dials.loop is not session.loop:
            dials = self._dials = LocalDials(session.loop)
        cfg = self.config
        preamble = self._proxy_header(session, stream)
        dials.start(
            stream,
            cfg.local_ip,
            cfg.local_port,
            LOCAL_DIAL_TIMEOUT_S,
            lambda: self.splice(stream, preamble),
            self._dialed,
        )

    def _dialed(self, stream: MuxStream, connected: bool) -> None:
        if connected:
            self.local_error = None
        else:
            self.local_failed(stream.reset_reason)

    def local_failed(self, reason: str) -> None:
        """The local service did not take a connection: remember why, and log it (at most
        once per `LOCAL_ERROR_LOG_INTERVAL_S`, with how many more failed meanwhile)."""
        self.local_error = reason
        now = time.monotonic()
        if now - self._last_local_log < LOCAL_ERROR_LOG_INTERVAL_S:
            self._unlogged_failures += 1
            return
        more = (
            f" ({self._unlogged_failures} more since the last line)"
            if self._unlogged_failures
            else ""
        )
        self._last_local_log, self._unlogged_failures = now, 0
        logger.warning(
            "tunnelc: [proxy=%s] %s: is the local service running?%s",
            self.config.name,
            reason,
            more,
        )

    def spawn(self, work: Coroutine[object, object, object]) -> None:
        """Run one stream's task; this proxy owns it (cancelled and awaited at close)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def proxy_ready(self, public_urls: tuple[str, ...]) -> None:
        self.public_port = public_port(public_urls)

    def _proxy_header(self, session: MuxSession, stream: MuxStream) -> bytes:
        version = self.config.transport.proxy_protocol_version
        if version is None:
            return b""
        server = session.peername[0] if session.peername else ""
        src = (stream.header.src_addr, stream.header.src_port)
        return proxy_header(version, src, (server, self.public_port))

    def splice(self, stream: MuxStream, preamble: bytes = b"") -> SpliceProtocol:
        """The protocol of one local socket: paced when the proxy has a bandwidth limit,
        and starting with `preamble` (a PROXY protocol header) when given."""
        if self.throttle is not None:
            return self.throttle.protocol(stream, preamble=preamble)
        if preamble:
            return PreambleSplice(stream, preamble)
        return SpliceProtocol(stream)

    def session_ended(self) -> None:
        return None

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._dials is not None:
            self._dials.close()
        if self.plugin is not None:
            self.plugin.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.plugin is not None:
            await self.plugin.wait_closed()
