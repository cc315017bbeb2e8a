"""Port relays (cluster.relayPorts): every node listens on every fixed TCP port of the cluster.

Theory of operation (docs/cluster.md, "TCP and UDP ports"):
- By default only the node that owns a fixed `remotePort` listens on it. With
  `cluster.relayPorts = true`, each node also listens, on its `proxyBindAddr`, on every TCP
  port that the registry's cache places on another node (`port:` claims), and relays each
  accepted connection to the owner in one stream of the internal link (relay.py, link.py),
  whose header names the port ("relay:tcp:<port>") and the visitor.
- The owner dials its own public listener for that port over loopback from a socket mapped
  to the visitor (peers.py), so the TCP proxy sees the visitor's address: allowIPs, the
  bandwidth limits, PROXY protocol and the logs are those of a direct visitor.
- The listeners follow the cache: one opens when a claim appears on another node, and closes
  when the claim is released or moves to this node. A claim made here closes this node's
  relay listener on that port synchronously (`yield_port`), before the proxy binds it.
  A bind that fails (the port is still held by a closing proxy, or by another program) is
  tried again after RETRY_S.
- A relay that cannot be made (no link, the owner refuses, the caches disagree) resets the
  visitor's connection: never a clean close for a broken stream.

Bounds: at most MAX_PORT_RELAY_LISTENERS listeners (the lowest ports win; the rest are
logged once per change); the relayed connections count against the relay's own limits
(MAX_RELAY_STREAMS leaving the node, and per link); opening a stream and the owner's
loopback dial each have relay.OPEN_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import TYPE_CHECKING, Final

from protocol.aio.splice import SpliceProtocol
from protocol.errors import ErrorCode

from .link import LinkError
from .relay import MAX_RELAY_STREAMS, PORT_KIND_PREFIX, Relay

if TYPE_CHECKING:
    from .registry import ClusterRegistry

logger = logging.getLogger(__name__)

MAX_PORT_RELAY_LISTENERS: Final = 1024  # listening sockets for other nodes' ports, per node
RETRY_S: Final = 2.0  # a failed bind is tried again after this (or at the next change)
LISTEN_BACKLOG: Final = 128
ACCEPT_BATCH: Final = 64  # connections taken per readiness of one listener
ACCEPT_ERROR_PAUSE_S: Final = 0.1  # after accept() fails (EMFILE): let descriptors free up


class PortRelay:
    """This node's relay listeners for the fixed TCP ports that other nodes own."""

    def __init__(self, relay: Relay, registry: ClusterRegistry, node: str, bind: str) -> None:
        self._relay = relay
        self._registry = registry
        self._node = node
        self._bind = bind
        self._listeners: dict[int, socket.socket] = {}
        self._pending: set[asyncio.Task[None]] = set()  # accepted, stream not yet open
        self._task: asyncio.Task[None] | None = None
        self._over = 0  # ports beyond the bound at the last reconcile (logged on change)
        self.relayed = 0  # connections ever relayed from these listeners

    @property
    def ports(self) -> list[int]:
        return sorted(self._listeners)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="port-relay")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for port in list(self._listeners):
            self._stop(port)
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    def yield_port(self, port: int) -> None:
        """This node claimed `port`: close its relay listener now, before the proxy binds."""
        if port in self._listeners:
            self._stop(port)

    # -- following the registry --------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            await self._reconcile()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_S):
                    await self._registry.wait_changed()

    def wanted(self) -> list[int]:
        """The fixed TCP ports that the cache places on other nodes, lowest first, bounded."""
        ports = sorted(
            int(name)
            for name, owner in self._registry.ports().items()
            if owner.node != self._node and name.isdigit() and 0 < int(name) < 65536
        )
        if len(ports) > MAX_PORT_RELAY_LISTENERS and self._over != len(ports):
            logger.warning(
                "tunneld: cluster: %d fixed ports are claimed elsewhere; relaying the lowest %d",
                len(ports),
                MAX_PORT_RELAY_LISTENERS,
            )
        self._over = len(ports) if len(ports) > MAX_PORT_RELAY_LISTENERS else 0
        return ports[:MAX_PORT_RELAY_LISTENERS]

    async def _reconcile(self) -> None:
        wanted = set(self.wanted())
        for port in list(self._listeners):
            if port not in wanted:
                self._stop(port)
                logger.info("tunneld: cluster: stopped relaying port %d", port)
        for port in sorted(wanted - set(self._listeners)):
            try:
                self._listen(port)
            except OSError as exc:
                logger.debug("tunneld: cluster: cannot listen on port %d yet: %r", port, exc)
                continue
            logger.info("tunneld: cluster: relaying port %d to its owner", port)

    def _listen(self, port: int) -> None:
        family = socket.AF_INET6 if ":" in self._bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._bind, port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, port, sock)
        self._listeners[port] = sock

    def _stop(self, port: int) -> None:
        sock = self._listeners.pop(port)
        # The reader goes first, by its descriptor, so that nothing is left watching a
        # number that the proxy's own socket may get next; then the port is free at once.
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()

    # -- relaying ----------------------------------------------------------------------------

    def _accept(self, port: int, listening: socket.socket) -> None:
        """The listener is readable: take what is waiting (at most ACCEPT_BATCH at a time)."""
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: pause this listener a moment
                logger.debug("tunneld: cluster: accept on port %d failed: %r", port, exc)
                loop.remove_reader(listening.fileno())
                loop.call_later(ACCEPT_ERROR_PAUSE_S, self._resume, port, listening)
                return
            sock.setblocking(False)
            if len(self._pending) + self._relay.outgoing >= MAX_RELAY_STREAMS:
                _reset(sock)
                continue
            task = loop.create_task(self._relay_one(port, sock, (str(peer[0]), int(peer[1]))))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _resume(self, port: int, listening: socket.socket) -> None:
        if self._listeners.get(port) is listening:
            asyncio.get_running_loop().add_reader(listening.fileno(), self._accept, port, listening)

    async def _relay_one(self, port: int, sock: socket.socket, visitor: tuple[str, int]) -> None:
        owner = self._registry.owner_of("port", str(port))
        try:
            if owner is None or owner.node == self._node:
                raise LinkError("no other node owns it now")
            stream = await self._relay.open(owner.node, f"{PORT_KIND_PREFIX}{port}", visitor)
        except LinkError as exc:
            logger.info("tunneld: cluster: cannot relay port %d for %s: %s", port, visitor, exc)
            self._relay.failures += 1
            _reset(sock)
            return
        except BaseException:
            _reset(sock)
            raise
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: SpliceProtocol(stream), sock=sock
            )
        except OSError as exc:  # the visitor left meanwhile
            stream.abort(ErrorCode.CANCELLED, f"the visitor left: {exc}")
            _reset(sock)
            return
        self.relayed += 1


def _reset(sock: socket.socket) -> None:
    """Close with RST: a relay that failed is not a clean, empty exchange."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
