"""xtcp visitors: a local listener whose connections go peer to peer when NAT allows it.

A connection to the visitor's port is held (its reading paused) while a P2P path is being
made, at most `fallbackTimeoutMs` (DEFAULT_FALLBACK_TIMEOUT_MS when 0), then it becomes
- a stream on the P2P mux (tunnel_client/punch.py), path "direct"; or
- a relayed stream through tunneld: the `fallbackTo` stcp visitor's when set, else this
  visitor's own (`visitor_open` of type xtcp, joined by tunneld as stcp joins), path "relayed".
A connection never waits on punching longer than that, and never fails because of it.

One P2P attempt runs at a time. After a failed one the next waits `minRetryInterval`, and
at most `maxRetriesAnHour` start in an hour (frp's keys and defaults); meanwhile connections
relay at once. `keepTunnelOpen` starts an attempt whenever the client logs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from typing import Final, cast

from protocol.aio.connection import MuxSession
from protocol.aio.signals import SignalChannel
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream, StreamResetError
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.messages import PunchDone, PunchGo, PunchReady, PunchStart, StreamHeader, VisitorOpen
from protocol.names import peer_text
from protocol.punch import PURPOSE_PUNCH
from protocol.visitorauth import VISITOR_NONCE_BYTES, visitor_proof

from .punch import (
    P2P_MUX_SETTINGS,
    PunchFailed,
    PunchPort,
    local_ip_of,
    punch_connect,
    send_probe,
    visitor_p2p,
)
from .visitorconfig import DEFAULT_FALLBACK_TIMEOUT_MS, VisitorConfig
from .visitors import Visitor, _host

logger = logging.getLogger(__name__)

SIGNAL_TIMEOUT_S: Final = 12.0  # each rendezvous signal from tunneld
HOUR_S: Final = 3600.0
MAX_HELD_CONNECTIONS: Final = 256  # connections waiting for a path; past it they relay at once
HELD_BUFFER_BYTES: Final = 256 * 1024  # what one waiting connection may send before it pauses


class _Held(asyncio.Protocol):
    """A local connection waiting for its path; then handed to a splice with what it sent.

    Reading is paused, but uvloop starts reading after connection_made whatever it did, so
    what arrives meanwhile is kept (at most HELD_BUFFER_BYTES, then reading pauses again)."""

    def __init__(self, visitor: XTCPVisitor) -> None:
        self.visitor = visitor
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.received: list[bytes] = []
        self.received_bytes = 0
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but implement it.
        tcp = self.transport = cast(asyncio.Transport, transport)
        tcp.pause_reading()
        self.task = self.visitor.hold(tcp, self)

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        self.received_bytes += len(data)
        if self.received_bytes >= HELD_BUFFER_BYTES and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return True  # half-close: the answer may still come

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()  # left while waiting: nothing to join

    def hand_over(self, transport: asyncio.Transport, splice: SpliceProtocol) -> None:
        transport.set_protocol(splice)
        splice.connection_made(transport)
        for data in self.received:
            splice.data_received(data)
        self.received.clear()
        if self.eof:
            splice.eof_received()
        else:
            transport.resume_reading()


class XTCPVisitor(Visitor):
    def __init__(self, config: VisitorConfig, user: str) -> None:
        super().__init__(config, user)
        self.fallback: Visitor | None = None  # fallbackTo, set by VisitorSet
        self._server: asyncio.Server | None = None
        self._streams: set[MuxStream] = set()
        self._held: set[asyncio.Task[None]] = set()
        self.p2p: MuxSession | None = None
        self._attempt: asyncio.Task[None] | None = None
        # Set when the running attempt has its outcome (a P2P mux, or a failure); the task
        # itself lives on while the mux is up.
        self._settled = asyncio.Event()
        self._starts: deque[float] = deque()  # monotonic times of attempts in the last hour
        self._failed_at: float | None = None
        self.direct_total = 0
        self.relayed_total = 0
        self.last_punch = ""  # the last attempt's outcome, for the status
        self.settings = P2P_MUX_SETTINGS
        wait_ms = config.fallback_timeout_ms or DEFAULT_FALLBACK_TIMEOUT_MS
        self.fallback_wait_s = wait_ms / 1000

    # -- listening ------------------------------------------------------------------------
    async def _listen(self, host: str, port: int) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Held(self), host, port, reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        return f"tcp://{_host(str(bound[0]))}:{bound[1]}"

    def hold(self, transport: asyncio.Transport, held: _Held) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._connect(transport, held))
        self._held.add(task)
        task.add_done_callback(self._held.discard)
        return task

    async def _connect(self, transport: asyncio.Transport, held: _Held) -> None:
        peer = transport.get_extra_info("peername") or ("", 0)
        try:
            stream = await self._stream_for(str(peer[0]), int(peer[1]))
        except asyncio.CancelledError:
            transport.abort()
            raise
        if stream is None:
            transport.abort()  # refused: the reason is logged and counted
            return
        if transport.is_closing():
            stream.abort(ErrorCode.CANCELLED, "the local connection left")
            return
        self._streams.add(stream)
        stream.add_close_callback(self._streams.discard)
        held.hand_over(transport, SpliceProtocol(stream))

    async def _stream_for(self, host: str, port: int) -> MuxStream | None:
        """A direct stream when there is (or soon is) a P2P path, else a relayed one."""
        if self.p2p is None and len(self._held) <= MAX_HELD_CONNECTIONS:
            self.start_attempt()
            if self._attempt is not None and not self._settled.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.fallback_wait_s):
                        await self._settled.wait()
        mux = self.p2p
        if mux is not None and not mux.closed:
            try:
                stream = mux.open_stream(StreamHeader(self.config.server_name, host, port))
            except (LocalProtocolError, ConnectionError) as exc:
                logger.info("tunnelc: visitor %s: P2P stream failed: %s", self.config.name, exc)
            else:
                self.direct_total += 1
                self.counters.total += 1
                self.counters.active += 1
                stream.add_close_callback(self._direct_closed)
                return stream
        self.relayed_total += 1
        return (self.fallback or self).open_stream()

    def _direct_closed(self, stream: MuxStream) -> None:
        self.counters.active -= 1

    # -- P2P attempts ---------------------------------------------------------------------
    def attach_session(self, session: MuxSession | None) -> None:
        self.session = session
        if session is not None and self.config.keep_tunnel_open and self.p2p is None:
            self.start_attempt()

    def start_attempt(self) -> None:
        """Start a P2P attempt unless one runs, or the retry rules say wait (then relay)."""
        if self._attempt is not None or self.session is None:
            return
        now = time.monotonic()
        starts = self._starts
        while starts and now - starts[0] >= HOUR_S:
            starts.popleft()
        if len(starts) >= self.config.max_retries_an_hour:
            return
        failed = self._failed_at
        if failed is not None and now - failed < self.config.min_retry_interval:
            return
        starts.append(now)
        self._settled = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._run_attempt(self.session))
        self._attempt = task
        task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        if self._attempt is task:
            self._attempt = None
            self._settled.set()

    async def _run_attempt(self, session: MuxSession) -> None:
        name = self.config.name
        try:
            mux = await self._punch(session)
        except PunchFailed as exc:
            self._failed_at = time.monotonic()
            self.last_punch = f"failed: {exc}"
            self._settled.set()
            logger.warning(
                "tunnelc: visitor %s: no P2P path to %s, relaying through the server: %s",
                name,
                self.target,
                peer_text(str(exc)),
            )
            return
        self._failed_at = None
        self.p2p = mux
        self._settled.set()
        peer = mux.peername or ("?", 0)
        self.last_punch = f"direct to {peer[0]}:{peer[1]}"
        logger.info("tunnelc: visitor %s: P2P path to %s at %s:%s", name, self.target, *peer)
        try:
            await mux.wait_closed()
        finally:
            if self.p2p is mux:
                self.p2p = None
            logger.info("tunnelc: visitor %s: P2P path to %s closed", name, self.target)

    def _rendezvous_stream(self, session: MuxSession) -> MuxStream:
        now = int(time.time())
        nonce = secrets.token_bytes(VISITOR_NONCE_BYTES)
        kind = str(self.config.type)
        proof = visitor_proof(self._verifier, kind, self.user, self.target, now, nonce)
        request = VisitorOpen(
            kind,
            self.server_user,
            self.config.server_name,
            self.config.name,
            now,
            nonce,
            proof,
            PURPOSE_PUNCH,
        )
        try:
            return session.open_stream(request)
        except (LocalProtocolError, ConnectionError) as exc:
            raise PunchFailed(f"cannot ask the server: {exc}") from None

    async def _punch(self, session: MuxSession) -> MuxSession:
        """One attempt: rendezvous through tunneld, probe, connect, TLS, proofs."""
        server = session.peername
        if server is None:
            raise PunchFailed("not connected to the server")
        stream = self._rendezvous_stream(session)
        channel = SignalChannel(stream)
        try:
            start = await channel.expect(PunchStart, SIGNAL_TIMEOUT_S)
            with PunchPort(local_ip_of(session)) as port:
                await send_probe(port, server, start.token)
                channel.send(PunchReady(b""))
                go = await channel.expect(PunchGo, SIGNAL_TIMEOUT_S)
                sock = await punch_connect(port, (go.host, go.port))
            mux = await visitor_p2p(
                sock, go.fingerprint, self._verifier, go.punch_id, self.settings
            )
        except StreamResetError as exc:
            stream.abort(ErrorCode.CANCELLED, "rendezvous failed")
            raise PunchFailed(f"the server ended the rendezvous: {exc.reason}") from None
        except (OSError, TimeoutError, EOFError, RemoteProtocolError, PunchFailed) as exc:
            reason = str(exc) or "the rendezvous timed out"
            if not stream.is_closed:
                channel.send(PunchDone(False, reason[:1000]))
                stream.close()
            raise PunchFailed(reason) from None
        except asyncio.CancelledError:
            stream.abort(ErrorCode.CANCELLED, "visitor closed")
            raise
        channel.send(PunchDone(True, ""))
        stream.close()
        return mux

    # -- status and shutdown --------------------------------------------------------------
    def status(self) -> dict[str, object]:
        row = super().status()
        row["path"] = "direct" if self.p2p is not None else "relayed"
        row["connections_direct"] = self.direct_total
        row["connections_relayed"] = self.relayed_total
        row["punch"] = self.last_punch
        if self.fallback is not None:
            row["fallback_to"] = self.fallback.config.name
        return row

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._held):
            task.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        for stream in list(self._streams):
            stream.abort(ErrorCode.CANCELLED, "visitor closed")
        if self.p2p is not None:
            self.p2p.abort(ErrorCode.NORMAL, "visitor closed")

    async def wait_closed(self) -> None:
        tasks = [*self._held, *([self._attempt] if self._attempt is not None else [])]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
