"""ControlListener: bindPort. Accept TCP, take a pending-login slot, run TLS, hand over.

We accept sockets ourselves and run each TLS handshake as a task (`accept_tls`, the lean
TLS transport of protocol/aio/tlslink.py), so every way a handshake can end (success,
failure, garbage, a reset, the deadline, eviction by cancelling the task) is seen here and frees
the connection's pending-login slot. A listener created with `ssl=` never tells the application
about a failed handshake, which leaked one slot per failure until no one could log in.

Over the pending-login limits (tunnel_server/prelogin.py) the oldest pending connection is
evicted; when none is old enough to evict, the newcomer gets a TLS handshake and one `busy`
message with a retry delay, from a small separate budget (`MAX_BUSY_ANSWERS`); past that budget
it is closed at once, which a client also treats as retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from protocol.aio.connection import MuxSession
from protocol.aio.tlslink import accept_tls
from protocol.errors import ErrorCode
from protocol.frames import FrameType, encode_frame
from protocol.messages import Busy, encode_message
from protocol.mux import Role
from tunnel_common.listen import listen_sockets

from .prelogin import PendingSlot
from .session import limit_before_login

if TYPE_CHECKING:
    from .server import TunnelServer

logger = logging.getLogger(__name__)

# Deadline for a client's TLS handshake, from accept to done (seconds).
TLS_HANDSHAKE_TIMEOUT_S: Final = 5.0
# Handshakes in flight only to tell a peer "busy"; past this the peer is closed at once.
MAX_BUSY_ANSWERS: Final = 64
BUSY_HANDSHAKE_TIMEOUT_S: Final = 2.0  # seconds
ACCEPT_BACKLOG: Final = 1024  # the kernel's queue of connections not yet accepted
ACCEPT_RETRY_S: Final = 0.1  # pause after accept() failed for want of descriptors
# Connections of an address at its pending limit wait unread, first come first served, for
# one of its slots; past MAX_PARKED they get a "busy" answer. A client gives up after its own
# dial timeout (10 s by default), so a parked socket older than PARK_DEADLINE_S is closed.
MAX_PARKED: Final = 1024
PARK_DEADLINE_S: Final = 10.0


class _BusyAnswer(asyncio.Protocol):
    """The TLS protocol of a connection told to come back later: it ignores what it reads."""

    def data_received(self, data: bytes) -> None:
        pass  # the peer's challenge is of no interest: the answer is already on its way


class ControlListener:
    """Owns the bindPort sockets and every connection on them until its login is decided."""

    def __init__(self, server: TunnelServer, ssl_ctx: ssl.SSLContext) -> None:
        self._server = server
        self._ssl = ssl_ctx
        self._sockets: list[socket.socket] = []
        self._accept_tasks: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy_answers = 0
        self._counters = server.stats.limits
        self._room = asyncio.Event()  # set when a pending slot is given back
        # Accepted sockets of addresses at their limit, unread, oldest first (MAX_PARKED).
        self._parked: dict[str, deque[tuple[socket.socket, float]]] = {}
        self._parked_count = 0
        server.pending.on_release = self.slot_released

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Bind every address `host` resolves to (like asyncio's create_server); return the port.

        `reuse_port`: SO_REUSEPORT, the port shared with other workers (cluster.reusePort)."""
        loop = asyncio.get_running_loop()
        self._sockets = listen_sockets(host, port, backlog=ACCEPT_BACKLOG, reuse_port=reuse_port)
        for sock in self._sockets:
            self._accept_tasks.append(loop.create_task(self._accept_loop(sock)))
        return int(self._sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting (sync, idempotent); connections in progress are ended by wait_closed."""
        for parked in self._parked.values():
            for sock, _ in parked:
                sock.close()
        self._parked.clear()
        self._parked_count = 0
        for task in self._accept_tasks:
            task.cancel()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    async def wait_closed(self) -> None:
        tasks = [*self._accept_tasks, *self._tasks]
        self._accept_tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Expected network failures are handled inside; anything else is a bug.
            logger.error("tunneld: control connection failed", exc_info=task.exception())

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_room()
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:
                if listener.fileno() == -1:
                    return  # closed by close()
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: keep serving the sessions we have, retry shortly.
                    self._server.fd_budget.accept_failed(exc, loop.time())
                    await asyncio.sleep(ACCEPT_RETRY_S)
                elif exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    logger.debug("tunneld: accept failed: %s", exc)  # that peer is gone
                else:
                    logger.warning("tunneld: accept failed: %s; retrying", exc)
                    await asyncio.sleep(ACCEPT_RETRY_S)  # never a hot loop
                continue
            self.accepted(sock, address)

    async def _wait_for_room(self) -> None:
        """While every pending slot is taken by a login that is still progressing, accept
        nothing: newcomers wait in the kernel's accept queue (ACCEPT_BACKLOG) at no cost."""
        pending = self._server.pending
        loop = asyncio.get_running_loop()
        while (wait_s := pending.global_wait_s(loop.time())) > 0:
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._room.wait()

    def slot_released(self, ip: str) -> None:
        self._room.set()
        parked = self._parked.get(ip)
        if parked:
            asyncio.get_running_loop().call_soon(self._unpark, ip)

    def _unpark(self, ip: str) -> None:
        """Start the handshakes of `ip`'s parked connections while its slots allow.

        Sockets whose client has already sent its ClientHello go first (a real client sends it
        at once; an idle socket from a flood never does), then the rest, each group oldest
        first; a socket parked longer than PARK_DEADLINE_S is closed (its client gave up).
        """
        parked = self._parked.get(ip)
        if not parked:
            return
        now = asyncio.get_running_loop().time()
        ready: list[tuple[socket.socket, float]] = []
        idle: list[tuple[socket.socket, float]] = []
        for sock, since in parked:
            if now - since > PARK_DEADLINE_S:
                sock.close()
            else:
                (ready if _has_input(sock) else idle).append((sock, since))
        queue = deque(ready + idle)
        while queue and self._start(queue[0][0], ip):
            queue.popleft()
        self._parked_count -= len(parked) - len(queue)
        if queue:
            self._parked[ip] = queue
        else:
            del self._parked[ip]

    # -- one connection ----------------------------------------------------------------------
    def accepted(self, sock: socket.socket, address: Any) -> None:
        if self._server.closing:
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ip = str(address[0]) if isinstance(address, tuple) else "?"
        if not self._server.ip_rules.permits(ip):  # allowIPs/denyIPs: closed before TLS
            self._server.stats.refused_controls += 1
            sock.close()
            return
        loop = asyncio.get_running_loop()
        if self._parked.get(ip):
            self._unpark(ip)  # the ones waiting longer go first
        if self._parked.get(ip) or not self._start(sock, ip):
            # This address is at its limit with every login progressing: park the socket
            # unread (first come, first served) until one of its slots comes back, or until
            # one of them has stalled long enough to be evicted.
            if self._parked_count >= MAX_PARKED:
                self._answer_busy(sock)
                return
            self._parked.setdefault(ip, deque()).append((sock, loop.time()))
            self._parked_count += 1
            loop.call_later(self._server.pending.stall_s, self._unpark, ip)

    def _start(self, sock: socket.socket, ip: str) -> bool:
        """Take a pending slot for `sock` and start its handshake; False if there is no room."""
        holder: list[asyncio.Task[None]] = []

        def evict() -> None:
            holder[0].cancel()  # the task ends the handshake or the session

        slot = self._server.pending.admit(ip, asyncio.get_running_loop().time(), evict)
        if slot is None:
            return False
        holder.append(self._spawn(self._handshake(sock, slot)))
        return True

    async def _handshake(self, sock: socket.socket, slot: PendingSlot) -> None:
        server = self._server
        loop = asyncio.get_running_loop()
        mux: MuxSession | None = None
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = "?"  # gone already; its handshake fails below
        try:
            try:
                # TLSLink, not the loop's SSL protocol: a third of the memory per session.
                made: list[MuxSession] = []
                await accept_tls(
                    sock,
                    self._ssl,
                    lambda: _new_mux(server, made),
                    timeout_s=TLS_HANDSHAKE_TIMEOUT_S,
                )
            except (OSError, TimeoutError) as exc:
                # Garbage, a reset, the deadline: expected on a public port.
                self._counters.tls_failures += 1
                logger.debug("tunneld: TLS handshake failed: %s", type(exc).__name__)
                _log_client_cert_refusal(peer, exc)
                sock.close()
                return
            except asyncio.CancelledError:
                sock.close()  # evicted (or shutting down) during the handshake
                raise
            # Evicted from here on: cancel ends the session (MuxSession closes its transport).
            server.pending.progressed(slot, loop.time())
            mux = made[0]
            await server.run_session(mux, slot)
        except asyncio.CancelledError:
            if mux is not None:
                mux.close(ErrorCode.BUSY, "evicted: too many logins in progress")
            if not slot.released:
                raise  # a real cancellation (shutdown), not our eviction
        finally:
            server.pending.release(slot)

    def _answer_busy(self, sock: socket.socket) -> None:
        if self._busy_answers >= MAX_BUSY_ANSWERS:
            self._counters.busy_closed += 1
            sock.close()
            return
        self._busy_answers += 1
        self._spawn(self._busy(sock))

    async def _busy(self, sock: socket.socket) -> None:
        retry_ms = self._server.pending.retry_after_ms()
        try:
            tls, _ = await accept_tls(
                sock, self._ssl, _BusyAnswer, timeout_s=BUSY_HANDSHAKE_TIMEOUT_S
            )
            busy = Busy(retry_ms, "the server is busy with other logins")
            tls.write(encode_frame(FrameType.MESSAGE, 0, 0, encode_message(busy)))
            go_away = [int(ErrorCode.BUSY), busy.reason]
            tls.write(encode_frame(FrameType.GO_AWAY, 0, 0, go_away))
            tls.close()  # close_notify after the two frames, then FIN
            self._counters.busy_answers += 1
        except (OSError, TimeoutError):
            sock.close()  # the peer went away or stalled: nothing more to tell it
        except BaseException:
            sock.close()
            raise
        finally:
            self._busy_answers -= 1


def _has_input(sock: socket.socket) -> bool:
    """True if the peer has sent something (peeked, not read) or closed the connection."""
    try:
        sock.recv(1, socket.MSG_PEEK)  # b"" (closed) counts too: it is not an idle flood
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset: starting it fails at once and frees the slot
    return True


def _new_mux(server: TunnelServer, made: list[MuxSession]) -> MuxSession:
    mux = MuxSession(Role.SERVER, server.mux_settings)
    limit_before_login(mux)
    made.append(mux)
    return mux


def _log_client_cert_refusal(peer: str, exc: BaseException) -> None:
    """One INFO line when transport.tls.trustedCaFile turned a client away, so the operator
    sees who and why (the client is told by the handshake's ALPN id, protocol/auth.py)."""
    if not isinstance(exc, ssl.SSLError):
        return
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = f"its certificate is not trusted ({exc.verify_message})"
    elif exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        why = "it sent no certificate"
    else:
        return
    logger.info("tunneld: refused a client from %s: %s (transport.tls.trustedCaFile)", peer, why)
