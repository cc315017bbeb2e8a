"""The relaying ingress of a cluster node: the HTTP vhost and the HTTPS edge.

HTTP: `RelayingHTTPVhost` reads a new connection's bytes raw until its first request head is
whole (at most maxHeaderBytes, within the header timeout), and looks at its Host, path and
basic-auth user. A route served here, or one the registry does not place on another node,
goes to the usual request reader with those bytes, exactly as if they had just arrived. A
route owned by another node sends the whole connection there (relay.py): the first request
decides, so the later requests of a keep-alive connection follow it to the same node.

HTTPS: `edge_relay` is the edge listener's hook, called with the peeked ClientHello before the
edge's own dispatch; it relays the socket from its first byte when the name is owned
elsewhere and not served here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from protocol.aio.splice import SpliceProtocol

from ..vhost.http_proxy import HTTPVhostServer
from ..vhost.inbound import InboundProtocol
from ..vhost.pages import error_response
from ..vhost.rewrite import basic_auth_user
from ..vhost.routing import VhostRouter
from ..vhost.sni import ClientHello
from ..vhost.splice import splice
from ..vhost.upstream import close_stream
from . import peers
from .link import LinkError
from .relay import Relay

logger = logging.getLogger(__name__)

HEAD_END: Final = b"\r\n\r\n"
UNREACHABLE: Final = "the node that serves this route cannot be reached now"


class RelayingHTTPVhost(HTTPVhostServer):
    """The HTTP vhost of a cluster node (see the module docstring)."""

    relay: Relay | None = None  # set by the server once the node has joined

    def _admit(self, conn: InboundProtocol) -> Coroutine[Any, Any, None]:
        if self.relay is None or conn.relayed:
            return super()._admit(conn)
        head = bytearray()

        def feed(data: bytes) -> None:
            head.extend(data)
            conn.notify()

        conn.feeder = feed  # now: bytes may arrive before the task first runs
        return self._peek(conn, self.relay, head)

    async def _peek(self, conn: InboundProtocol, relay: Relay, head: bytearray) -> None:
        deadline = conn.loop.time() + self._header_timeout_s
        while (
            HEAD_END not in head
            and len(head) <= self._max_header_bytes
            and conn.peek() is None  # EOF or LOST
            and not self.closing
            and await conn.wait(deadline)
        ):
            pass
        node = _owner(relay, self._router, bytes(head)) if HEAD_END in head else None
        if node is None:
            await self._serve_here(conn, bytes(head))
            return
        await self._relay(conn, relay, node, bytes(head))

    async def _serve_here(self, conn: InboundProtocol, head: bytes) -> None:
        """Go on as the plain vhost, with the bytes read so far fed first."""
        markers = []
        while (item := conn.pop()) is not None:
            markers.append(item)  # EOF or LOST, which came after the bytes
        coroutine = super()._admit(conn)  # installs the request reader as the feeder
        if head:
            conn.feeder(head)
        for marker in markers:
            conn.push(marker, 0)
        await coroutine

    async def _relay(self, conn: InboundProtocol, relay: Relay, node: str, head: bytes) -> None:
        logger.debug("cluster relay: http from %s to node %s", conn.peer[0], node)
        conn.feeder = conn.push_bytes  # raw from now on
        try:
            stream = await relay.open(node, "http", conn.peer)
        except LinkError as exc:
            relay.failures += 1
            logger.warning("tunneld: cluster: cannot relay to node %s: %s", node, exc)
            conn.feeder = conn.discard
            conn.write(error_response(502, None, UNREACHABLE))
            conn.close()
            return
        try:
            await stream.write(head)
            await splice(conn, stream)
        except BaseException:
            stream.abort()
            conn.abort()
            raise
        await close_stream(stream)
        if conn.lost:
            conn.abort()
        else:
            conn.close()


def _owner(relay: Relay, router: VhostRouter, head: bytes) -> str | None:
    """The other node that owns the first request's route; None to serve it here."""
    host, path, user = _request_route(head)
    if host is None or router.lookup(host, path, user) is not None:
        return None
    return relay.owner_of_http(host, path, user)


def _request_route(head: bytes) -> tuple[str | None, str, str]:
    """(Host, path, basic-auth user) of a raw request head; Host None if it has none."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None, "/", ""
    target = parts[1]
    host: bytes | None = None
    authorization: bytes | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"host" and host is None:
            host = value.strip()
        elif name == b"authorization":
            authorization = value.strip()
    if target.startswith((b"http://", b"https://")):
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        host, target = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
    path = target.split(b"?", 1)[0] or b"/"
    if not host:
        return None, "/", ""
    text = host.decode("latin-1")
    if not text.startswith("[") and text.count(":") == 1:
        text = text.rsplit(":", 1)[0]
    return text, path.decode("latin-1"), basic_auth_user(authorization)


EdgeRelay = Callable[[socket.socket, ClientHello], Awaitable[bool]]


def edge_relay(relay: Relay, served_here: Callable[[str], bool]) -> EdgeRelay:
    """The HTTPS edge's hook: True if it relayed (or refused) the connection itself."""

    async def hook(sock: socket.socket, hello: ClientHello) -> bool:
        name = hello.server_name
        if name is None or served_here(name):
            return False
        try:
            peer = sock.getpeername()
        except OSError:
            return False
        visitor = (str(peer[0]), int(peer[1]))
        if peers.visitor_of(visitor) is not None:
            return False  # relayed to us: served here or not at all
        node = relay.owner_of_sni(name)
        if node is None:
            return False
        try:
            stream = await relay.open(node, "https", visitor)
        except LinkError as exc:
            relay.failures += 1
            logger.warning("tunneld: cluster: cannot relay %s to node %s: %s", name, node, exc)
            sock.close()
            return True
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: SpliceProtocol(stream), sock)
        except OSError:
            stream.abort()
            sock.close()
        return True

    return hook
