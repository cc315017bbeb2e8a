"""ControlListener: bindPort. Accept TCP, take a pending-login slot, run TLS, hand over.

We accept sockets ourselves and run each TLS handshake as a task
(`loop.connect_accepted_socket(..., ssl=...)`), so every way a handshake can end (success,
failure, garbage, a reset, the deadline, eviction by cancelling the task) is seen here and frees
the connection's pending-login slot. A listener created with `ssl=` never tells the application
about a failed handshake, which leaked one slot per failure until no one could log in.
(`loop.start_tls` on an accepted plain transport would do too, but uvloop may hand the first
bytes of the ClientHello to the plain protocol before start_tls takes over, losing them.)

Over the pending-login limits (tunnel_server/prelogin.py) the oldest pending connection is
evicted; when none is old enough to evict, the newcomer gets a TLS handshake and one `busy`
message with a retry delay, from a small separate budget (`MAX_BUSY_ANSWERS`); past that budget
it is closed at once, which a client also treats as retryable.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from protocol.aio.connection import MuxSession
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

    async def start(self, host: str, port: int) -> int:
        """Bind every address `host` resolves to (like asyncio's create_server); return the port."""
        loop = asyncio.get_running_loop()
        self._sockets = listen_sockets(host, port, backlog=ACCEPT_BACKLOG)
        for sock in self._sockets:
            self._accept_tasks.append(loop.create_task(self._accept_loop(sock)))
        return int(self._sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting (sync, idempotent); connections in progress are ended by wait_closed."""
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

    # -- one connection ----------------------------------------------------------------------
    def accepted(self, sock: socket.socket, address: Any) -> None:
        if self._server.closing:
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ip = str(address[0]) if isinstance(address, tuple) else "?"
        loop = asyncio.get_running_loop()
        holder: list[asyncio.Task[None]] = []

        def evict() -> None:
            holder[0].cancel()  # the task ends the handshake or the session

        slot = self._server.pending.admit(ip, loop.time(), evict)
        if slot is None:
            self._answer_busy(sock)
            return
        holder.append(self._spawn(self._handshake(sock, slot)))

    async def _handshake(self, sock: socket.socket, slot: PendingSlot) -> None:
        server = self._server
        loop = asyncio.get_running_loop()
        mux: MuxSession | None = None
        try:
            try:
                async with asyncio.timeout(TLS_HANDSHAKE_TIMEOUT_S):
                    # uvloop returns its SSL protocol here, not ours: keep ours on the side.
                    made: list[MuxSession] = []
                    await loop.connect_accepted_socket(
                        lambda: _new_mux(server, made),
                        sock,
                        ssl=self._ssl,
                        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S,
                    )
            except (OSError, TimeoutError) as exc:
                # Garbage, a reset, the deadline: expected on a public port.
                self._counters.tls_failures += 1
                logger.debug("tunneld: TLS handshake failed: %s", type(exc).__name__)
                sock.close()
                return
            except asyncio.CancelledError:
                sock.close()  # evicted (or shutting down) during the handshake
                raise
            # Evicted from here on: cancel ends the session (MuxSession closes its transport).
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
            async with asyncio.timeout(BUSY_HANDSHAKE_TIMEOUT_S):
                tls, _ = await asyncio.get_running_loop().connect_accepted_socket(
                    _BusyAnswer,
                    sock,
                    ssl=self._ssl,
                    ssl_handshake_timeout=BUSY_HANDSHAKE_TIMEOUT_S,
                )
            busy = Busy(retry_ms, "the server is busy with other logins")
            tls.write(encode_frame(FrameType.MESSAGE, 0, 0, encode_message(busy)))
            go_away = [int(ErrorCode.BUSY), busy.reason]
            tls.write(encode_frame(FrameType.GO_AWAY, 0, 0, go_away))
            tls.close()  # flushes, then close_notify
            self._counters.busy_answers += 1
        except (OSError, TimeoutError):
            sock.close()  # the peer went away or stalled: nothing more to tell it
        except BaseException:
            sock.close()
            raise
        finally:
            self._busy_answers -= 1


def _new_mux(server: TunnelServer, made: list[MuxSession]) -> MuxSession:
    mux = MuxSession(Role.SERVER, server.mux_settings)
    limit_before_login(mux)
    made.append(mux)
    return mux
