"""Internal links between nodes: TLS, then an HMAC handshake on the cluster secret, then a mux.

Theory of operation. Each node listens on `cluster.internalAddr`:`cluster.internalPort` and
publishes that address and its certificate's fingerprint in its registry key. A node that
must relay a request to another opens one link to it, lazily, and keeps it: every relayed
connection is one stream of that link's `MuxSession`, with the same windows, flow control
and keepalives as a client's traffic.

The handshake, on the TLS connection and before any mux byte:

    listener -> dialer   MAGIC + nonce_l (32 bytes)
    dialer -> listener   nonce_d (32) + len(name) (1) + name + mac_d (32)
    listener -> dialer   mac_l (32)

with mac_x = HMAC-SHA256(secret, label_x + listener fingerprint + nonce_l + nonce_d + name).
Both sides prove the secret over fresh nonces of both, and the proofs are bound to the
listener's certificate, which the dialer also pins to the fingerprint in the registry: a node
without the secret cannot open a link, and a man in the middle cannot pass one on. Only then
does either side start its mux (the dialer as CLIENT, the listener as SERVER). The peer's
name is covered by the proofs, so the listener may use the link for its own relays to that
node too: a node pair needs one link, whichever node dialled first.

Bounds: connections in their TLS or HMAC handshake hold slots of the same table as tunneld's
pre-login peers (prelogin.py): at most MAX_PENDING_LINKS at once and MAX_PENDING_LINKS_PER_IP
from one address; a newcomer beyond evicts the most stalled one (no step for a second), or
is closed at once when all are making progress. Each has at most AUTH_TIMEOUT_S; the
handshake's input is at most MAX_HELLO_BYTES; at most MAX_LINKS links are open in each
direction; each link carries at most MAX_RELAY_STREAMS relayed connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Final, cast

from protocol.aio.connection import MuxSession
from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode
from protocol.messages import StreamHeader
from protocol.mux import Role
from protocol.settings import MuxSettings
from tunnel_common.fingerprint import pinning_client_context

from ..prelogin import PendingLogins, PendingSlot

logger = logging.getLogger(__name__)

MAGIC: Final = b"TKNODE1\n"
NONCE_BYTES: Final = 32
MAC_BYTES: Final = 32
MAX_NAME_BYTES: Final = 255
MAX_HELLO_BYTES: Final = NONCE_BYTES + 1 + MAX_NAME_BYTES + MAC_BYTES
AUTH_TIMEOUT_S: Final = 5.0  # TLS handshake plus HMAC handshake, per connection
MAX_PENDING_LINKS: Final = 64  # internal connections not yet authenticated, at once
MAX_PENDING_LINKS_PER_IP: Final = 16  # of them from one address
MAX_LINKS: Final = 256  # open links, each direction (one per peer node)
MAX_RELAY_STREAMS: Final = 4096  # relayed connections per link
DIAL_LABEL: Final = b"tunnelkit node link: dialer"
ACCEPT_LABEL: Final = b"tunnelkit node link: listener"
LISTEN_BACKLOG: Final = 128
ACCEPT_ERROR_PAUSE_S: Final = 0.1  # after accept() fails (EMFILE): let descriptors free up


class LinkError(Exception):
    """The link could not be opened; the text says why."""


def link_mac(
    label: bytes, secret: bytes, fp: bytes, nonce_l: bytes, nonce_d: bytes, name: bytes
) -> bytes:
    return hmac.new(secret, label + fp + nonce_l + nonce_d + name, hashlib.sha256).digest()


def cert_fingerprint(transport: asyncio.BaseTransport) -> bytes:
    """SHA-256 of the peer's leaf certificate (DER), as tunnel_common.fingerprint parses it."""
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return hashlib.sha256(der).digest() if der else b""


class _Handshake(asyncio.Protocol):
    """One side of the HMAC handshake; hands the transport to a MuxSession when it is done."""

    def __init__(self, *, dialer: bool, secret: bytes, fp: bytes, name: bytes) -> None:
        self._dialer = dialer
        self._secret = secret
        self._fp = fp  # the listener's certificate fingerprint
        self._name = name  # the dialer's node name (known to the dialer only at first)
        self._nonce_l = b"" if dialer else os.urandom(NONCE_BYTES)
        self._nonce_d = os.urandom(NONCE_BYTES) if dialer else b""
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self._dialer and not hmac.compare_digest(cert_fingerprint(transport), self._fp):
            # Pinned before the dialer says anything: a stranger learns no proof to attack.
            self._fail(LinkError("its certificate is not the one in the registry"))
            return
        if not self._dialer:
            self.transport.write(MAGIC + self._nonce_l)

    def data_received(self, data: bytes) -> None:
        self._buffer += data  # after the handshake: the mux's first bytes, for start_mux
        if self.done.done():
            return
        try:
            self._advance()
        except LinkError as exc:
            self._fail(exc)

    def _advance(self) -> None:
        buf = self._buffer
        assert self.transport is not None
        if self._dialer:
            if not self._nonce_l:
                if len(buf) < len(MAGIC) + NONCE_BYTES:
                    return
                if bytes(buf[: len(MAGIC)]) != MAGIC:
                    raise LinkError("the peer does not speak the node link protocol")
                self._nonce_l = bytes(buf[len(MAGIC) : len(MAGIC) + NONCE_BYTES])
                del buf[: len(MAGIC) + NONCE_BYTES]
                mac = self._mac(DIAL_LABEL)
                self.transport.write(self._nonce_d + bytes([len(self._name)]) + self._name + mac)
            if len(buf) < MAC_BYTES:
                return
            if not hmac.compare_digest(bytes(buf[:MAC_BYTES]), self._mac(ACCEPT_LABEL)):
                raise LinkError("the node did not prove the cluster secret (cluster.secret)")
            del buf[:MAC_BYTES]
            self._finish()
            return
        if len(buf) > MAX_HELLO_BYTES:
            raise LinkError("the handshake is too long")
        if len(buf) < NONCE_BYTES + 1:
            return
        size = buf[NONCE_BYTES]
        end = NONCE_BYTES + 1 + size + MAC_BYTES
        if len(buf) < end:
            return
        self._nonce_d = bytes(buf[:NONCE_BYTES])
        self._name = bytes(buf[NONCE_BYTES + 1 : NONCE_BYTES + 1 + size])
        if not hmac.compare_digest(bytes(buf[end - MAC_BYTES : end]), self._mac(DIAL_LABEL)):
            raise LinkError("wrong cluster secret")
        self.transport.write(self._mac(ACCEPT_LABEL))
        del buf[:end]
        self._finish()

    def _mac(self, label: bytes) -> bytes:
        return link_mac(label, self._secret, self._fp, self._nonce_l, self._nonce_d, self._name)

    def _finish(self) -> None:
        assert self.transport is not None
        self.done.set_result(self.transport)

    def take_rest(self) -> bytes:
        """The bytes after the handshake (the mux's first ones); the mux takes them over."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self._dialer and self._nonce_l:
            reason = "the node refused our proof: is cluster.secret the same on both nodes?"
        else:
            reason = f"the connection closed: {str(exc) or 'EOF'}"
        self.done.set_exception(LinkError(reason))

    @property
    def peer_name(self) -> str:
        return self._name.decode("utf-8", "replace")


def start_mux(
    transport: asyncio.Transport, handshake: _Handshake, role: Role, settings: MuxSettings
) -> MuxSession:
    """Hand an authenticated transport to a new MuxSession, with the bytes already read."""
    mux = MuxSession(role, settings)
    transport.set_protocol(mux)
    mux.connection_made(transport)
    view = memoryview(handshake.take_rest())
    while view and not mux.closed:
        buffer = mux.get_buffer(len(view))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        mux.buffer_updated(size)
        view = view[size:]
    return mux


StreamHandler = Callable[[MuxStream], None]
LinkHandler = Callable[[str, MuxSession], None]  # (authenticated peer node name, its link)


def admit_streams(mux: MuxSession, on_stream: StreamHandler) -> StreamHandler:
    """`on_stream` for the streams a link's peer opens, at most MAX_RELAY_STREAMS at once."""

    def admit(stream: MuxStream) -> None:
        if mux.stream_count() > MAX_RELAY_STREAMS:
            stream.abort(ErrorCode.REFUSED, "too many relayed connections on this link")
            return
        on_stream(stream)

    return admit


class LinkListener:
    """Accepts other nodes' links on the internal address (see the module docstring)."""

    def __init__(
        self,
        *,
        secret: bytes,
        ssl_context: ssl.SSLContext,
        fingerprint: bytes,
        settings: MuxSettings,
        on_stream: StreamHandler,
    ) -> None:
        self._secret = secret
        self._ssl = ssl_context
        self._fp = fingerprint
        self._settings = settings
        self._on_stream = on_stream
        self.on_link: LinkHandler | None = None  # told of each link that comes up
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # Unauthenticated connections, bounded as tunneld's pre-login peers are (prelogin.py).
        self._slots = PendingLogins(MAX_PENDING_LINKS, MAX_PENDING_LINKS_PER_IP)
        self.links: set[MuxSession] = set()
        self.refused = 0  # busy (every slot making progress) or over MAX_LINKS
        self.failed = 0  # TLS or HMAC handshake failed or timed out

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._accept_task = loop.create_task(self._accept_loop(sock))
        sockname = sock.getsockname()
        return str(sockname[0]), int(sockname[1])

    async def _accept_loop(self, listening: socket.socket) -> None:
        # Accepted here, and TLS started by connect_accepted_socket: uvloop's start_tls on a
        # plain transport may lose the ClientHello's first bytes (see accept.py).
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listening)
            except OSError as exc:
                logger.debug("tunneld: cluster: accept failed: %r", exc)
                await asyncio.sleep(ACCEPT_ERROR_PAUSE_S)
                continue
            if len(self.links) >= MAX_LINKS:
                self.refused += 1
                sock.close()
                continue
            self._admit(sock, loop)

    def _admit(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        try:
            ip = str(sock.getpeername()[0])
        except OSError:
            sock.close()
            return
        tasks: list[asyncio.Task[None]] = []

        def evict() -> None:
            for task in tasks:
                task.cancel()

        slot = self._slots.admit(ip, loop.time(), evict)
        if slot is None:  # every pending connection is making progress: busy
            self.refused += 1
            sock.close()
            return
        task = loop.create_task(self._authenticate(sock, slot))
        tasks.append(task)
        self._pending.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._pending.discard(task)
            if not slot.released:  # cancelled before it ran: nothing else closes the socket
                self._slots.release(slot)
                sock.close()

        task.add_done_callback(done)

    async def _authenticate(self, sock: socket.socket, slot: PendingSlot) -> None:
        loop = asyncio.get_running_loop()
        handshake = _Handshake(dialer=False, secret=self._secret, fp=self._fp, name=b"")
        authenticated = False
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                await loop.connect_accepted_socket(
                    lambda: handshake, sock, ssl=self._ssl, ssl_handshake_timeout=AUTH_TIMEOUT_S
                )
                self._slots.progressed(slot, loop.time())
                transport = await handshake.done
            authenticated = True
        except (LinkError, ssl.SSLError, OSError, TimeoutError) as exc:
            self.failed += 1
            logger.warning(
                "tunneld: cluster: refused an internal link from %s: %s",
                slot.ip,
                exc or type(exc).__name__,
            )
        finally:
            self._slots.release(slot)
            if not authenticated:
                if handshake.transport is not None:
                    handshake.transport.abort()
                sock.close()
        if not authenticated:
            return
        mux = start_mux(transport, handshake, Role.SERVER, self._settings)
        mux.on_stream = admit_streams(mux, self._on_stream)
        self.links.add(mux)
        logger.info("tunneld: cluster: link from node %s is up", handshake.peer_name)
        if self.on_link is not None:
            self.on_link(handshake.peer_name, mux)  # the relays to that node may use it too
        try:
            await mux.wait_closed()
        finally:
            self.links.discard(mux)

    def close(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
        if self._sock is not None:
            self._sock.close()
        for task in self._pending:
            task.cancel()
        for mux in list(self.links):
            mux.close(ErrorCode.SHUTDOWN, "node shutting down")

    async def wait_closed(self) -> None:
        if self._accept_task is not None:
            await asyncio.gather(self._accept_task, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)
        for mux in list(self.links):
            await mux.wait_closed()


async def dial_link(
    host: str,
    port: int,
    *,
    fingerprint: bytes,
    secret: bytes,
    name: str,
    settings: MuxSettings,
) -> MuxSession:
    """Open an authenticated link to the node at host:port whose certificate is
    `fingerprint`; raises LinkError with the reason."""
    loop = asyncio.get_running_loop()
    ctx = pinning_client_context()  # pinned to the fingerprint below, as tunnelc pins
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    handshake = _Handshake(
        dialer=True, secret=secret, fp=fingerprint, name=name.encode("utf-8")[:MAX_NAME_BYTES]
    )
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            transport, _ = await loop.create_connection(lambda: handshake, host, port, ssl=ctx)
            transport = await handshake.done
    except (OSError, TimeoutError) as exc:
        if transport is not None:
            transport.abort()
        raise LinkError(f"cannot reach {host}:{port}: {str(exc) or type(exc).__name__}") from None
    except LinkError:
        if transport is not None:
            transport.abort()
        raise
    return start_mux(transport, handshake, Role.CLIENT, settings)


def relay_header(kind: str, peer: tuple[str, int]) -> StreamHeader:
    """The header of a relayed connection: its kind ("http" or "https") and its visitor."""
    return StreamHeader(proxy=f"relay:{kind}", src_addr=peer[0], src_port=peer[1])
