"""Relays: a vhost request for a route owned by another node goes to that node.

Theory of operation (docs/cluster.md, "Relays"):
- Ingress. The HTTP vhost (relay_http.py) reads a connection's first request head, and the
  HTTPS edge its ClientHello, without consuming them. If no local route serves the host and
  the registry's cache names another node as the owner, the connection's bytes, from the
  first, go to that node in one stream of the internal link (link.py), and come back.
- Owner. A relayed stream is dialled into this node's own public port over loopback, from a
  socket whose address `peers.py` maps to the original visitor. The connection thus takes
  exactly the path of a public one (the edge's dispatch, TLS termination, the vhost's rules,
  quotas, access log, X-Forwarded-For of the visitor), and is never relayed again.

Bounds: the links' own (link.py); at most MAX_RELAY_STREAMS relayed connections leave this
node at once, and as many arrive; opening a link or a stream has OPEN_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Final

from protocol.aio.connection import MuxSession
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode
from tunnel_common.fingerprint import parse_fingerprint

from . import peers
from .link import MAX_LINKS, LinkError, LinkListener, admit_streams, dial_link, relay_header
from .registry import ClusterUnavailable, NodeInfo

if TYPE_CHECKING:
    import ssl

    from tunnel_server.server import TunnelServer

    from .registry import ClusterRegistry

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_S: Final = 10.0  # to open a link (if none is up) and a stream on it
MAX_RELAY_STREAMS: Final = 4096  # relayed connections leaving, and arriving, at once
MAX_PATH_CHARS: Final = 1024  # of a request path, when looking for its location's owner
KINDS: Final = ("http", "https", "tcpmux")
PORT_KIND_PREFIX: Final = "tcp:"  # a relayed fixed port's kind: "tcp:<port>" (port_relay.py)


class Relay:
    """This node's relays: its link listener, its links to the others, and the lookups."""

    def __init__(
        self, server: TunnelServer, registry: ClusterRegistry, secret: bytes, name: str
    ) -> None:
        self._server = server
        self._registry = registry
        self._secret = secret
        self._name = name
        self._links: dict[str, MuxSession] = {}
        self._dialing: dict[str, asyncio.Task[MuxSession]] = {}
        self._known: dict[str, NodeInfo] = {}  # last records read, for when Redis is away
        self._tasks: set[asyncio.Task[None]] = set()  # relayed connections arriving
        self.listener: LinkListener | None = None
        self.outgoing = 0  # relayed connections leaving now
        self.relayed_out = 0  # ever sent to another node
        self.relayed_in = 0  # ever served for another node
        self.failures = 0  # could not reach the owner

    # -- life cycle --------------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext) -> tuple[str, int]:
        server = self._server
        self.listener = LinkListener(
            secret=self._secret,
            ssl_context=ssl_context,
            fingerprint=server.cert_fp,
            settings=server.mux_settings,
            on_stream=self._arrived,
        )
        self.listener.on_link = self._linked
        return await self.listener.start(host, port)

    def _linked(self, node: str, mux: MuxSession) -> None:
        """A node dialled us: our relays to it use that link unless ours is up."""
        current = self._links.get(node)
        if current is None or current.closed:
            self._links[node] = mux

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for task in self._dialing.values():
            task.cancel()
        for mux in self._links.values():
            mux.close(ErrorCode.SHUTDOWN, "node shutting down")

    async def wait_closed(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._dialing.values(), return_exceptions=True)
        if self.listener is not None:
            await self.listener.wait_closed()
        for mux in list(self._links.values()):
            await mux.wait_closed()

    # -- lookups (the registry's cache: no round trip) ---------------------------------------

    def owner_of_http(self, host: str, path: str, user: str) -> str | None:
        """The other node that owns the route for host + path (+ basic-auth user), or None."""
        path = path[:MAX_PATH_CHARS] or "/"
        for name in _host_candidates(host):
            for end in range(len(path), 0, -1):
                prefix = f"{name}{path[:end]}"
                owner = None
                if user:
                    owner = self._registry.owner_of("domain", f"{prefix}@{user}")
                if owner is None:
                    owner = self._registry.owner_of("domain", prefix)
                if owner is not None:
                    return owner.node if owner.node != self._name else None
        return None

    def owner_of_sni(self, server_name: str) -> str | None:
        """The other node that owns the host's "/" route (TLS shows no path), or None."""
        for name in _host_candidates(server_name):
            owner = self._registry.owner_of("domain", f"{name}/")
            if owner is not None:
                return owner.node if owner.node != self._name else None
        return None

    # -- ingress -----------------------------------------------------------------------------

    async def open(self, node: str, kind: str, visitor: tuple[str, int]) -> MuxStream:
        """A stream to `node` for one visitor's connection; raises LinkError with the reason."""
        if self.outgoing >= MAX_RELAY_STREAMS:
            raise LinkError(f"{MAX_RELAY_STREAMS} relayed connections are open already")
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                mux = await self._link(node)
        except TimeoutError:
            raise LinkError(f"node {node} did not answer in time") from None
        try:
            stream = mux.open_stream(relay_header(kind, visitor))
        except ConnectionError as exc:
            raise LinkError(f"the link to node {node} closed: {exc}") from None
        self.outgoing += 1
        self.relayed_out += 1
        stream.add_close_callback(self._left)
        return stream

    def _left(self, stream: MuxStream) -> None:
        self.outgoing -= 1

    async def _link(self, node: str) -> MuxSession:
        mux = self._links.get(node)
        if mux is not None and not mux.closed:
            return mux
        task = self._dialing.get(node)
        if task is None:
            if len(self._links) + len(self._dialing) >= MAX_LINKS:
                raise LinkError(f"{MAX_LINKS} links are open already")
            task = asyncio.get_running_loop().create_task(self._dial(node))
            self._dialing[node] = task
            task.add_done_callback(lambda _: self._dialing.pop(node, None))
        return await asyncio.shield(task)

    async def _dial(self, node: str) -> MuxSession:
        try:
            info = await self._registry.node_info(node)
        except ClusterUnavailable:
            info = self._known.get(node)
        if info is None or not info.internal or not info.fingerprint:
            raise LinkError(f"node {node} has no internal address in the registry")
        self._known[node] = info
        host, _, port = info.internal.rpartition(":")
        mux = await dial_link(
            host.strip("[]"),
            int(port),
            fingerprint=parse_fingerprint(info.fingerprint),
            secret=self._secret,
            name=self._name,
            settings=self._server.mux_settings,
        )
        mux.on_stream = admit_streams(mux, self._arrived)  # the peer may relay back on it
        self._links[node] = mux
        logger.info("tunneld: cluster: link to node %s is up", node)
        return mux

    # -- owner -------------------------------------------------------------------------------

    def _arrived(self, stream: MuxStream) -> None:
        kind = stream.header.proxy.removeprefix("relay:")
        port = relayed_port(kind)
        if port is not None:  # a fixed TCP port: only if it is ours (caches may disagree)
            owner = self._registry.owner_of("port", str(port))
            if owner is None or owner.node != self._name:
                stream.abort(ErrorCode.REFUSED, f"node {self._name} does not own port {port}")
                return
        elif kind not in KINDS:
            kind = ""
        if not kind or len(self._tasks) >= MAX_RELAY_STREAMS:
            stream.abort(ErrorCode.REFUSED, "this node does not take that relay")
            return
        task = asyncio.get_running_loop().create_task(self._serve(stream, kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, stream: MuxStream, kind: str) -> None:
        """Dial our own public port for the visitor and splice it with the stream."""
        logger.debug("cluster relay: %s for %s arrived", kind, stream.header.src_addr)
        server = self._server
        port = relayed_port(kind)
        if port is None:
            ports = {"http": server.http_port, "https": server.https_port}
            port = ports.get(kind, server.tcpmux_port)
        if port is None:
            stream.abort(ErrorCode.REFUSED, f"node {self._name} has no {kind} vhost")
            return
        host = _local_address(server.config.proxy_bind_addr)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock: socket.socket | None = socket.socket(family, socket.SOCK_STREAM)
        assert sock is not None
        local: tuple[str, int] | None = None
        loop = asyncio.get_running_loop()
        try:
            sock.setblocking(False)
            sock.bind((host, 0))
            local = sock.getsockname()[:2]
            if not peers.remember(local, (stream.header.src_addr, stream.header.src_port)):
                stream.abort(ErrorCode.REFUSED, "too many relayed connections")
                return
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await loop.sock_connect(sock, (host, port))
            await loop.create_connection(lambda: SpliceProtocol(stream), sock=sock)
            sock = None  # the transport owns it now
            self.relayed_in += 1
            await stream.wait_closed()
        except (OSError, TimeoutError) as exc:
            logger.debug("cluster relay: cannot reach our own %s port: %r", kind, exc)
            stream.abort(ErrorCode.REFUSED, f"node {self._name} cannot serve it now")
        finally:
            if sock is not None:
                sock.close()
            if local is not None:
                peers.forget(local)


def _local_address(bind: str) -> str:
    """Where this node reaches its own public ports."""
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def _host_candidates(host: str) -> list[str]:
    """The host, then the wildcards that may cover it, most specific first (as the router)."""
    name = host.lower().rstrip(".")
    if name.startswith("["):
        return [name]
    name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    out = [name]
    labels = name.split(".")
    while len(labels) >= 3:
        labels = labels[1:]
        out.append("*." + ".".join(labels))
    return out


def relayed_port(kind: str) -> int | None:
    """The port of a relayed port's stream kind ("tcp:<port>"), or None."""
    if not kind.startswith(PORT_KIND_PREFIX):
        return None
    digits = kind[len(PORT_KIND_PREFIX) :]
    if not digits.isdigit() or len(digits) > 5 or not 0 < int(digits) < 65536:
        return None
    return int(digits)
