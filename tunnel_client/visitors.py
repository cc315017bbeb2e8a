"""Visitors (`[[visitors]]`): local listeners joined to other clients' stcp/sudp proxies.

Each accepted TCP connection (stcp), or each local UDP peer (sudp), becomes one stream that
this client opens to tunneld with a `visitor_open` header (protocol/visitorauth.py proves the
secretKey without sending it). tunneld joins it to the owner's stream, or resets it with a
one-line reason that is logged here as `tunnelc: visitor <name> refused: <reason>`.

Bounds: MAX_FLOWS_PER_SUDP_VISITOR local UDP peers per sudp visitor (more are dropped and
counted), idle UDP peers forgotten after FLOW_IDLE_TIMEOUT_S; TCP connections are bounded by
the mux's streams per session and tunneld's maxVisitorConnsPerClient. Refusal lines are
logged at most once per REFUSAL_LOG_INTERVAL_S per visitor (the counter has them all).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Final, cast

from protocol.aio.connection import MuxSession
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream, StreamResetError
from protocol.dgramframe import DatagramDecoder, frame_datagram
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.messages import VisitorOpen
from protocol.names import peer_text
from protocol.visitorauth import (
    VISITOR_NONCE_BYTES,
    secret_verifier,
    target_name,
    visitor_proof,
)

from .visitorconfig import NO_LISTENER, VisitorConfig

logger = logging.getLogger(__name__)

MAX_FLOWS_PER_SUDP_VISITOR: Final = 256
FLOW_IDLE_TIMEOUT_S: Final = 60.0
REFUSAL_LOG_INTERVAL_S: Final = 10.0


@dataclass(slots=True)
class VisitorCounters:
    active: int = 0
    total: int = 0
    refused: int = 0
    dropped_datagrams: int = 0


class Visitor:
    """What stcp and sudp visitors share: the proof, the session, the counters, the log."""

    def __init__(self, config: VisitorConfig, user: str) -> None:
        self.config = config
        self.user = user
        server_user = config.server_user if config.server_user is not None else user
        self.server_user = server_user
        self.target = target_name(server_user, config.server_name)
        secret = config.secret_key.reveal() if config.secret_key else ""
        self._verifier = secret_verifier(secret, config.server_name)
        self.session: MuxSession | None = None
        self.counters = VisitorCounters()
        self.state = "starting"  # "listening" | "no listener" | "error"
        self.bound = ""  # tcp://host:port or udp://host:port once listening
        self.last_error = ""
        self._last_log = -REFUSAL_LOG_INTERVAL_S
        self._unlogged = 0

    def open_stream(self) -> MuxStream | None:
        """A new visitor stream on the current session, or None (refused; logged)."""
        session = self.session
        if session is None or session.closed:
            self.refused("not connected to the server")
            return None
        now = int(time.time())
        nonce = secrets.token_bytes(VISITOR_NONCE_BYTES)
        kind = str(self.config.type)
        proof = visitor_proof(self._verifier, kind, self.user, self.target, now, nonce)
        request = VisitorOpen(
            kind, self.server_user, self.config.server_name, self.config.name, now, nonce, proof
        )
        try:
            stream = session.open_stream(request)
        except (LocalProtocolError, ConnectionError) as exc:
            self.refused(str(exc))
            return None
        self.counters.active += 1
        self.counters.total += 1
        stream.add_close_callback(self._stream_closed)
        return stream

    def _stream_closed(self, stream: MuxStream) -> None:
        self.counters.active -= 1
        if stream.reset_code == ErrorCode.REFUSED:
            self.refused(stream.reset_reason)
        elif stream.reset_code in (ErrorCode.DIAL_FAILED, ErrorCode.ACCEPT_TIMEOUT):
            self.refused(f"the proxy's side failed: {stream.reset_reason}")

    def refused(self, reason: str) -> None:
        """Count a refusal and log it, at most once per REFUSAL_LOG_INTERVAL_S."""
        self.counters.refused += 1
        self.last_error = reason
        now = time.monotonic()
        if now - self._last_log < REFUSAL_LOG_INTERVAL_S:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last line)" if self._unlogged else ""
        self._last_log, self._unlogged = now, 0
        logger.warning(
            "tunnelc: visitor %s refused: %s%s", self.config.name, peer_text(reason), more
        )

    def status(self) -> dict[str, object]:
        c = self.counters
        return {
            "name": self.config.name,
            "type": str(self.config.type),
            "server": self.target,
            "bind": self.bound,
            "state": self.state,
            "connections_active": c.active,
            "connections_total": c.total,
            "refused": c.refused,
            "dropped_datagrams": c.dropped_datagrams,
            "path": "relayed",  # through tunneld: the only path stcp/sudp have
            "error": self.last_error,
        }

    async def start(self) -> None:
        """Listen on bindAddr:bindPort; a failure is logged and shown in the status."""
        cfg = self.config
        if cfg.bind_port == NO_LISTENER:
            self.state = "no listener"
            return
        try:
            self.bound = await self._listen(cfg.bind_addr, cfg.bind_port)
        except OSError as exc:
            self.state, self.last_error = "error", f"cannot listen: {exc}"
            logger.error(
                "tunnelc: visitor %s cannot listen on %s:%d: %s",
                cfg.name,
                cfg.bind_addr,
                cfg.bind_port,
                exc.strerror or exc,
            )
            return
        self.state = "listening"
        logger.info("tunnelc: visitor %s listening on %s for %s", cfg.name, self.bound, self.target)

    async def _listen(self, host: str, port: int) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        return None


class STCPVisitor(Visitor):
    def __init__(self, config: VisitorConfig, user: str) -> None:
        super().__init__(config, user)
        self._server: asyncio.Server | None = None
        self._streams: set[MuxStream] = set()

    async def _listen(self, host: str, port: int) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port, reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        return f"tcp://{_host(str(bound[0]))}:{bound[1]}"

    def _protocol(self) -> SpliceProtocol:
        return SpliceProtocol(on_connect=self._on_connect)

    def _on_connect(self, proto: SpliceProtocol, transport: asyncio.Transport) -> MuxStream | None:
        stream = self.open_stream()
        if stream is not None:
            self._streams.add(stream)
            stream.add_close_callback(self._streams.discard)
        return stream

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for stream in list(self._streams):
            stream.abort(ErrorCode.CANCELLED, "visitor closed")


class _Peer:
    """One local UDP peer of an sudp visitor, and its stream."""

    def __init__(self, addr: tuple[str, int], stream: MuxStream) -> None:
        self.addr = addr
        self.stream = stream
        self.last_active = time.monotonic()
        self.task: asyncio.Task[None] | None = None


class SUDPVisitor(Visitor, asyncio.DatagramProtocol):
    def __init__(self, config: VisitorConfig, user: str) -> None:
        Visitor.__init__(self, config, user)
        self._transport: asyncio.DatagramTransport | None = None
        self._peers: dict[tuple[str, int], _Peer] = {}

    async def _listen(self, host: str, port: int) -> str:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        bound = transport.get_extra_info("sockname")
        return f"udp://{_host(str(bound[0]))}:{bound[1]}"

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        key = (str(addr[0]), int(cast(int, addr[1])))
        peer = self._peers.get(key)
        if peer is None:
            if len(self._peers) >= MAX_FLOWS_PER_SUDP_VISITOR:
                self.counters.dropped_datagrams += 1
                return
            stream = self.open_stream()
            if stream is None:
                self.counters.dropped_datagrams += 1
                return
            peer = self._peers[key] = _Peer(key, stream)
            peer.task = asyncio.get_running_loop().create_task(self._replies(peer))
        peer.last_active = time.monotonic()
        if peer.stream.congested or peer.stream.is_closed:
            self.counters.dropped_datagrams += 1  # UDP: lost rather than queued
            return
        peer.stream.send(frame_datagram(data))

    def error_received(self, exc: Exception) -> None:
        logger.debug("tunnelc: visitor %s: %s", self.config.name, exc)

    async def _replies(self, peer: _Peer) -> None:
        """The proxy's datagrams back to the local peer, until idle, end or reset."""
        decoder = DatagramDecoder()
        stream = peer.stream
        try:
            while True:
                idle = time.monotonic() - peer.last_active
                if idle >= FLOW_IDLE_TIMEOUT_S:
                    stream.abort(ErrorCode.CANCELLED, "idle")
                    return
                try:
                    async with asyncio.timeout(FLOW_IDLE_TIMEOUT_S - idle):
                        data = await stream.read()
                except TimeoutError:
                    continue  # idle check above
                if not data:
                    decoder.finish()
                    stream.close()
                    return
                peer.last_active = time.monotonic()
                transport = self._transport
                for datagram in decoder.feed(data):
                    if transport is not None:
                        transport.sendto(datagram, peer.addr)
        except RemoteProtocolError as exc:
            stream.abort(ErrorCode.PROTOCOL_ERROR, str(exc))
        except (StreamResetError, ConnectionError):
            pass  # refused (logged by the close callback) or the session ended
        finally:
            if self._peers.get(peer.addr) is peer:
                del self._peers[peer.addr]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for peer in list(self._peers.values()):
            peer.stream.abort(ErrorCode.CANCELLED, "visitor closed")
            if peer.task is not None:
                peer.task.cancel()

    async def wait_closed(self) -> None:
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
