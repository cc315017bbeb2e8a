"""TCP proxy: a public port whose connections are spliced to the client's local service."""

from __future__ import annotations

import asyncio
import logging
from typing import Final, cast

from protocol.aio import sockopts
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.messages import NewProxy
from protocol.proxytype import ProxyType
from tunnel_common.throttle import Pacer, Throttle, joined

from ..cluster.peers import visitor_of
from ..groups import ProxyGroup
from ..ports import listen_on_public_port
from .base import ProxyContext, ProxyRefused
from .userconn import UserConnRefused, UserConns

logger = logging.getLogger(__name__)


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class TCPProxy:
    type = ProxyType.TCP

    def __init__(self, ctx: ProxyContext, request: NewProxy, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.requested_port = request.remote_port
        self.port = 0
        self.public_urls: tuple[str, ...] = ()
        self.public_note = ""
        self._server: asyncio.Server | None = None
        self.conns = UserConns(ctx, name, "tcp", holds_socket=True, compression=request.compression)
        # bandwidthLimitMode = "server": this side paces the proxy (one bucket, both ways).
        limit = request.bandwidth_limit
        self.throttle: Throttle | None = Throttle(limit) if limit else None
        self._admissions: set[asyncio.Task[None]] = set()  # NewUserConn plugin calls
        self.group_name = request.group
        self.group_key = request.group_key
        self.group: ProxyGroup[TCPProxy] | None = None

    @property
    def available(self) -> bool:
        """A group member takes visitors while its client's session is open."""
        return not self.ctx.session.closed

    async def start(self) -> None:
        if self.group_name:
            await self._start_grouped()
            return
        ctx = self.ctx
        loop = asyncio.get_running_loop()

        async def listen(port: int) -> int:
            self._server = await loop.create_server(
                self._protocol,
                ctx.config.proxy_bind_addr,
                port,
                reuse_address=True,
            )
            sockopts.set_listener_abortive(self._server)  # visitors start abortive
            bound: int = self._server.sockets[0].getsockname()[1]
            return bound

        self.port = await listen_on_public_port(
            ctx.ports, ctx.client_id, "tcp", self.requested_port, listen, ctx.user
        )
        self.public_urls = (f"tcp://{format_host(ctx.public_host)}:{self.port}",)

    async def _start_grouped(self) -> None:
        """Join the group's shared port, opening it for the first member."""
        ctx = self.ctx
        port = self.requested_port
        if not port:
            raise ProxyRefused("loadBalancer.group needs a fixed remotePort (members share it)")
        if self.throttle is not None:
            raise ProxyRefused(
                'bandwidthLimitMode = "server" does not apply to a loadBalancer group; use "client"'
            )
        assert ctx.groups is not None
        group = ctx.groups.join(
            "tcp", ctx.user, self.group_name, self.group_key, f"port {port}", self, ctx.client_id
        )
        self.group = group
        async with group.lock:
            if group.shared is None:
                group.shared = await self._listen_shared(group, port)
        self.port = port
        self.public_urls = (f"tcp://{format_host(ctx.public_host)}:{port}",)

    async def _listen_shared(self, group: ProxyGroup[TCPProxy], port: int) -> asyncio.Server:
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        server: list[asyncio.Server] = []

        def protocol() -> SpliceProtocol:
            member = group.pick()
            if member is None:  # the last member is leaving: reset the visitor
                return SpliceProtocol(on_connect=lambda proto, transport: None)
            return member._protocol()

        async def listen(port: int) -> int:
            shared = await loop.create_server(
                protocol, ctx.config.proxy_bind_addr, port, reuse_address=True
            )
            sockopts.set_listener_abortive(shared)  # visitors start abortive
            server.append(shared)
            return port

        await listen_on_public_port(ctx.ports, _group_owner(group), "tcp", port, listen)
        return server[0]

    def _protocol(self) -> SpliceProtocol:
        visitors = self.ctx.visitors
        if visitors is not None and visitors.plugins_check_user_conns:
            return _PluginGatedSplice(self)
        pacer = self._pacer()
        if pacer is not None:
            return pacer.protocol(on_connect=self._on_user, on_close=self._on_closed)
        # The listener is abortive (set_listener_abortive): its sockets inherit SO_LINGER.
        return SpliceProtocol(on_connect=self._on_user, on_close=self._on_closed, abortive=True)

    def _pacer(self) -> Pacer | None:
        """The proxy's own limit and its user's bandwidth quota, looked up per connection so
        a quota set while the proxy runs applies to its next visitors too."""
        visitors = self.ctx.visitors
        return joined(self.throttle, visitors.throttle() if visitors is not None else None)

    def _admit_later(self, proto: SpliceProtocol, transport: asyncio.Transport) -> None:
        """Hold a visitor (reading paused) until the NewUserConn plugins answer."""
        if len(self._admissions) >= self.ctx.config.max_streams_per_proxy:
            self.ctx.counters.refused_flows += 1
            transport.close()
            return
        task = asyncio.get_running_loop().create_task(self._admit_logged(proto, transport))
        self._admissions.add(task)
        task.add_done_callback(self._admissions.discard)

    async def _admit_logged(self, proto: SpliceProtocol, transport: asyncio.Transport) -> None:
        try:
            await self._admit(proto, transport)
        except Exception:
            logger.exception("[proxy=%s] admitting a visitor failed", self.name)
            transport.close()

    async def _admit(self, proto: SpliceProtocol, transport: asyncio.Transport) -> None:
        visitors = self.ctx.visitors
        assert visitors is not None
        admitted = await visitors.plugins_admit(_visitor(transport), "tcp")
        if not admitted or transport.is_closing():
            transport.close()
            return
        stream = self._on_user(proto, transport)
        if stream is None:
            transport.close()
            return
        assert isinstance(proto, _PluginGatedSplice)
        proto.admitted(stream, transport, self._pacer())

    def _on_user(self, proto: SpliceProtocol, transport: asyncio.Transport) -> MuxStream | None:
        return self.open_or_none(_visitor(transport))

    def open_or_none(self, src: tuple[str, int]) -> MuxStream | None:
        """A stream for a visitor, or None when refused (counted and logged by UserConns);
        the splice then closes the visitor's connection at once."""
        try:
            return self.conns.open_stream(src)
        except UserConnRefused:
            return None

    def _on_closed(self, stream: MuxStream) -> None:
        self.conns.closed(stream)

    def refresh_urls(self) -> bool:
        return False  # a port's URL never changes

    def close(self) -> None:
        for task in list(self._admissions):
            task.cancel()
        if self._server is not None:
            self._server.close()
            self.ctx.ports.release(self.ctx.client_id, "tcp", self.port)
            self._server = None
        group, self.group = self.group, None
        if group is not None and self.ctx.groups is not None:
            if self.ctx.groups.leave(group, self) and isinstance(group.shared, asyncio.Server):
                group.shared.close()
                self.ctx.ports.release(_group_owner(group), "tcp", self.port)
                group.shared = None
        self.conns.abort_all("proxy closed")

    async def wait_closed(self) -> None:
        return None


def _visitor(transport: asyncio.BaseTransport) -> tuple[str, int]:
    """The connection's visitor: its peer, or the original visitor of a connection that
    another node of the cluster relayed (cluster.relayPorts; cluster/peers.py)."""
    info = transport.get_extra_info("peername") or ("", 0)
    peer = (str(info[0]), int(info[1]))
    return visitor_of(peer) or peer


def _group_owner(group: ProxyGroup[TCPProxy]) -> str:
    """Who holds a group's port in the PortAllocator: the group, not its first member."""
    return f"group:{group.user}/{group.name}"


class _PluginGatedSplice(SpliceProtocol):
    """A visitor connection whose stream opens only after the NewUserConn plugins admit it.

    Reading is paused meanwhile (on the next loop iteration too: uvloop starts reading after
    connection_made returns); anything that arrives before the pause takes hold is kept, up to
    HELD_BYTES, and handed to the stream on admission, EOF included.
    """

    HELD_BYTES: Final = 64 * 1024

    def __init__(self, owner: TCPProxy) -> None:
        super().__init__(on_close=owner._on_closed)
        self._owner = owner
        self.held: list[bytes] = []
        self._held_bytes = 0
        self.held_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but implement it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        # As SpliceProtocol: TCP_NODELAY is the loop's; abortive, so a crash shows a RST.
        sockopts.set_abortive(transport)
        transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._pause)
        self._owner._admit_later(self, transport)

    def _pause(self) -> None:
        if self.stream is None and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.stream is not None:
            super().data_received(data)
            return
        self.held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > self.HELD_BYTES and self.transport is not None:
            self.transport.close()  # a visitor flooding before admission: drop it

    def eof_received(self) -> bool:
        if self.stream is not None:
            return super().eof_received()
        self.held_eof = True
        return True

    def admitted(
        self, stream: MuxStream, transport: asyncio.Transport, pacer: Pacer | None = None
    ) -> None:
        if pacer is not None:
            self._hand_over(stream, transport, pacer)
            return
        self.stream = stream
        stream.attach(transport)
        for chunk in self.held:
            stream.send(chunk)
        self.held.clear()
        if self.held_eof:
            stream.send_eof()
        else:
            transport.resume_reading()

    def _hand_over(self, stream: MuxStream, transport: asyncio.Transport, pacer: Pacer) -> None:
        """Admitted under a bandwidth limit: a paced splice takes the connection over (the
        transport's protocol changes) and gets what was held, charged like any read."""
        paced = pacer.protocol(stream, on_close=self._owner._on_closed)
        transport.set_protocol(paced)
        paced.connection_made(transport)  # attaches the stream through the limit
        held, self.held = self.held, []
        for chunk in held:
            paced.data_received(chunk)
        if self.held_eof:
            paced.eof_received()
        elif not paced.reading_held and not transport.is_closing():
            transport.resume_reading()
