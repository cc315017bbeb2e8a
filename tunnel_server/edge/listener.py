"""The edge listener on vhostHTTPSPort: peek at the ClientHello, then hand the socket over.

Theory of operation. The listener owns the listening socket and accepts connections itself.
For each one it *peeks* (MSG_PEEK) at the visitor's first bytes until the ClientHello is
whole, without consuming anything, then decides by the SNI name and the ALPN list:

    ALPN "tunnelkit/1", or SNI = controlServerName         -> the control listener (only
                                                               when bindPort = vhostHTTPSPort)
    ALPN "acme-tls/1" and a pending TLS-ALPN-01 challenge  -> the challenge responder
    SNI has an `https` (passthrough) route                  -> the SNI vhost, plain socket
    SNI is covered by a certificate in the CertStore        -> TLS terminated here, then the
                                                               HTTP vhost (X-Forwarded-Proto
                                                               https), same routes as HTTP
    anything else                                           -> closed

Because nothing was consumed, the chosen handler sees the connection from its first byte:
the SNI vhost reads and forwards the ClientHello itself, and the TLS terminator
(`loop.connect_accepted_socket(..., ssl=context)`) runs a normal handshake.

Waiting without spinning: a peeked socket stays readable, so before each wait the socket's
receive low-water mark (SO_RCVLOWAT) is raised to the length the reader needs next (the end
of the record being read); the kernel then wakes us only when that much has arrived, or at
EOF. A wake-up that brings no new byte therefore means EOF, and the connection is closed.
The mark goes back to 1 before the hand-over.

Bounds: each pending connection takes a unit of the descriptor budget (fdbudget.py; none
left: closed at once); at most `max_pending` connections are being peeked or handshaked at
once; when full, the *oldest* is dropped (slow-ClientHello floods cannot lock out new
visitors). Each has `hello_timeout_s` for its ClientHello and `handshake_timeout_s` for the
TLS handshake.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final, Self

from protocol.auth import ALPN_PROTOCOL

from ..fdbudget import FDBudget
from ..vhost.http_proxy import HTTPVhostServer
from ..vhost.https_sni import HTTPSVhostServer
from ..vhost.routing import VhostRouter
from ..vhost.sni import MAX_CLIENT_HELLO_BYTES, ClientHello, HelloError, HelloReader
from .certstore import CertStore
from .h2conn import H2Service

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING: Final = 1024  # connections peeked or handshaking at once
HELLO_TIMEOUT_S: Final = 10.0  # from accept to a whole ClientHello
HANDSHAKE_TIMEOUT_S: Final = 10.0  # the TLS handshake of a terminated connection
LISTEN_BACKLOG: Final = 1024
MAX_IDLE_WAKEUPS: Final = 3  # wake-ups with no new byte before the peer counts as gone
ACME_TLS_ALPN: Final = "acme-tls/1"
CONTROL_ALPN: Final = ALPN_PROTOCOL  # tunnelc offers it; browsers never do

ChallengeLookup = Callable[[str], ssl.SSLContext | None]
ControlHandOver = Callable[[socket.socket, Any], None]  # (socket, peer address)
# A cluster node's relay (cluster/relay_http.py): True if it took the connection over.
RelayHook = Callable[[socket.socket, ClientHello], Awaitable[bool]]


class EdgeListener:
    """See the module docstring. `start`, then `close` + `wait_closed`."""

    def __init__(
        self,
        *,
        certs: CertStore,
        passthrough: HTTPSVhostServer,
        passthrough_router: VhostRouter,
        terminated: HTTPVhostServer | None,
        h2: H2Service | None = None,
        challenges: ChallengeLookup | None = None,
        control: ControlHandOver | None = None,
        control_server_name: str | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self._certs = certs
        self._passthrough = passthrough
        self._passthrough_router = passthrough_router
        self._terminated = terminated
        self.h2 = h2  # visitors that negotiate ALPN h2
        self._challenges = challenges
        self._control = control  # port reuse: tunnelc connections go to the control listener
        self._control_server_name = control_server_name
        self._max_pending = max_pending
        self._hello_timeout_s = hello_timeout_s
        self._handshake_timeout_s = handshake_timeout_s
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._pending: dict[asyncio.Task[None], None] = {}  # insertion order = age
        self._evicted: set[asyncio.Task[None]] = set()  # cancelled to make room, still ending
        self._closing = False
        self.fd_budget: FDBudget | None = None  # one descriptor per pending connection
        self.refused_fds = 0  # accepted and closed at once: the descriptor budget was spent
        self.evicted = 0  # pending connections dropped to make room
        self.terminated_total = 0
        self.control_total = 0
        self.passthrough_total = 0
        self.handshake_failures = 0
        self.relay: RelayHook | None = None  # a cluster node's, for names owned elsewhere

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """Listen on host:port (0 picks a port) and return the bound address.

        `reuse_port`: SO_REUSEPORT, the port shared with other workers (cluster.reusePort)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._accept_task = loop.create_task(self._accept_loop(sock))
        name = sock.getsockname()
        return str(name[0]), int(name[1])

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._accept_task is not None:
            self._accept_task.cancel()
        for task in self._pending:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._accept_task is not None:
            await asyncio.gather(self._accept_task, return_exceptions=True)
        while self._pending or self._evicted:
            await asyncio.wait([*self._pending, *self._evicted])
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    # -- accepting ----------------------------------------------------------------------------

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listening)
            except OSError as exc:
                # EMFILE and friends: back off briefly rather than spin on the error.
                logger.warning("tunneld: https edge accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            budget = self.fd_budget
            if budget is not None and not budget.try_acquire(loop.time()):
                self.refused_fds += 1
                sock.close()
                continue
            if len(self._pending) >= self._max_pending:
                oldest = next(iter(self._pending))
                del self._pending[oldest]  # it no longer counts; it closes its socket
                self._evicted.add(oldest)
                oldest.cancel()
                self.evicted += 1
            task = loop.create_task(self._serve(sock))
            self._pending[task] = None
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._pending.pop(task, None)
        self._evicted.discard(task)
        if self.fd_budget is not None:
            self.fd_budget.release()  # the vhost that took the socket over holds its own
        if not task.cancelled() and task.exception() is not None:
            logger.error("https edge connection failed", exc_info=task.exception())

    async def _serve(self, sock: socket.socket) -> None:
        handed_over = False
        try:
            sock.setblocking(False)
            try:
                async with asyncio.timeout(self._hello_timeout_s):
                    hello = await _peek_hello(sock)
            except TimeoutError:
                logger.debug("https edge: no ClientHello in time")
                return
            except HelloError as exc:
                logger.debug("https edge: bad ClientHello: %s", exc)
                return
            if hello is None or self._closing:
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            handed_over = True
            if self._control is not None and self._is_control(hello):
                self.control_total += 1
                self._control(sock, sock.getpeername())
                return
            await self._dispatch(sock, hello)
        finally:
            if not handed_over:
                _close_cleanly(sock)

    def _is_control(self, hello: ClientHello) -> bool:
        if CONTROL_ALPN in hello.alpn:
            return True
        name = self._control_server_name
        return name is not None and hello.server_name == name

    async def _dispatch(self, sock: socket.socket, hello: ClientHello) -> None:
        loop = asyncio.get_running_loop()
        name = hello.server_name
        if name is None:
            _close_cleanly(sock)
            return
        if ACME_TLS_ALPN in hello.alpn:
            ctx = self._challenges(name) if self._challenges is not None else None
            if ctx is None:
                logger.debug("https edge: no TLS-ALPN-01 challenge pending for %s", name)
                _close_cleanly(sock)
                return
            await self._handshake(sock, ctx, _ChallengeAnswered, name)
            return
        if self.relay is not None and await self.relay(sock, hello):
            return
        if self._passthrough_router.lookup(name) is not None:
            self.passthrough_total += 1
            await loop.connect_accepted_socket(self._passthrough.protocol, sock)
            return
        ctx = self._certs.context_for(name) if self._terminated is not None else None
        if ctx is None or self._terminated is None:
            logger.debug("https edge: no route or certificate for %s", name)
            _close_cleanly(sock)
            return
        self.terminated_total += 1
        h1, h2 = self._terminated.protocol, self.h2
        await self._handshake(
            sock, ctx, lambda: _ALPNSwitch(h1, h2.protocol if h2 is not None else None), name
        )

    async def _handshake(
        self,
        sock: socket.socket,
        ctx: ssl.SSLContext,
        factory: Callable[[], asyncio.BaseProtocol],
        name: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                factory, sock, ssl=ctx, ssl_handshake_timeout=self._handshake_timeout_s
            )
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            # A visitor that does not trust us, speaks no TLS we offer, or goes away.
            self.handshake_failures += 1
            logger.debug("https edge: TLS handshake for %s failed: %r", name, exc)


class _ALPNSwitch(asyncio.Protocol):
    """After the handshake: hand the transport to the HTTP/1.1 vhost or to h2, by ALPN."""

    def __init__(
        self,
        h1: Callable[[], asyncio.Protocol],
        h2: Callable[[], asyncio.Protocol] | None,
    ) -> None:
        self._h1 = h1
        self.h2 = h2

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol = self.h2() if alpn == "h2" and self.h2 is not None else self._h1()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class _ChallengeAnswered(asyncio.Protocol):
    """A TLS-ALPN-01 validation: the handshake itself is the answer (RFC 8737 section 3)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def _peek_hello(sock: socket.socket) -> ClientHello | None:
    """Peek until the ClientHello is whole; None if the visitor went away first."""
    reader = HelloReader()
    seen = 0
    idle = 0
    while True:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, reader.want))
        await _readable(sock)
        try:
            data = sock.recv(MAX_CLIENT_HELLO_BYTES, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        except OSError as exc:
            logger.debug("https edge: peek failed: %r", exc)
            return None
        if len(data) <= seen:
            idle += 1
            if not data or idle >= MAX_IDLE_WAKEUPS:
                return None  # EOF (or an error) before the ClientHello was whole
            continue
        seen = len(data)
        hello = reader.feed(data)
        if hello is not None:
            return hello


def _close_cleanly(sock: socket.socket) -> None:
    """Close with a FIN, not a reset: take the peeked bytes first (the kernel resets a socket
    closed with unread input). Bounded: one ClientHello's worth, without waiting."""
    try:
        sock.recv(MAX_CLIENT_HELLO_BYTES)
    except OSError:
        pass  # nothing to read (BlockingIOError) or already dead: close either way
    sock.close()


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        loop.remove_reader(fd)
