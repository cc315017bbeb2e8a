"""xtcp proxy (the owner's side): relayed visitor connections, and P2P rendezvous.

Each stream tunneld opens for this proxy starts with one kind byte (protocol/punch.py):
KIND_RELAY, and the rest is a visitor connection relayed as stcp relays it (dial
localIP:localPort and splice); or KIND_RENDEZVOUS, and the stream carries the rendezvous
signals: this side probes tunneld from a fresh local port, connects to the visitor's observed
address from it (tunnel_client/punch.py) and serves a P2P mux there, whose streams are
visitor connections handled exactly like relayed ones.

Bounds: MAX_P2P_SESSIONS P2P sessions per proxy (a rendezvous past it is refused, so the
visitor relays); KIND_TIMEOUT_S for the kind byte; every rendezvous step has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Final

from protocol.aio.connection import MuxSession
from protocol.aio.signals import SignalChannel
from protocol.aio.stream import MuxStream, StreamResetError
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import PunchGo, PunchReady, PunchStart
from protocol.punch import KIND_RELAY, KIND_RENDEZVOUS
from protocol.visitorauth import secret_verifier

from ..config import ProxyConfig
from ..inspect.store import CaptureStore
from .tcp import TCPProxy

logger = logging.getLogger(__name__)

MAX_P2P_SESSIONS: Final = 16
KIND_TIMEOUT_S: Final = 10.0  # tunneld sends the kind byte at once
SIGNAL_TIMEOUT_S: Final = 12.0  # each rendezvous signal from tunneld


class XTCPProxy(TCPProxy):
    def __init__(self, config: ProxyConfig, store: CaptureStore | None = None) -> None:
        super().__init__(config, store)
        secret = config.secret_key.reveal() if config.secret_key else ""
        self._verifier = secret_verifier(secret, config.name)
        self._tls: tuple[ssl.SSLContext, bytes] | None = None  # made at the first rendezvous
        self.p2p_sessions: set[MuxSession] = set()
        # The hole punching (tunnel_client/punch.py) loads with the first xtcp proxy.
        from ..punch import P2P_MUX_SETTINGS

        self.settings = P2P_MUX_SETTINGS

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        self.spawn(self._route(session, stream))

    async def _route(self, session: MuxSession, stream: MuxStream) -> None:
        try:
            async with asyncio.timeout(KIND_TIMEOUT_S):
                kind = await stream.read(1)
        except (TimeoutError, StreamResetError, ConnectionError):
            stream.abort(ErrorCode.CANCELLED, "no xtcp stream kind")
            return
        if kind == KIND_RELAY:
            super().handle_stream(session, stream)
        elif kind == KIND_RENDEZVOUS:
            await self._rendezvous(session, stream)
        else:
            stream.abort(ErrorCode.PROTOCOL_ERROR, f"unknown xtcp stream kind {kind!r}")

    async def _rendezvous(self, session: MuxSession, stream: MuxStream) -> None:
        from ..punch import (
            PunchFailed,
            PunchPort,
            local_ip_of,
            owner_p2p,
            p2p_server_context,
            punch_meet,
            send_probe,
        )

        name = self.config.name
        if len(self.p2p_sessions) >= MAX_P2P_SESSIONS:
            stream.abort(ErrorCode.REFUSED, f"{MAX_P2P_SESSIONS} P2P sessions are open")
            return
        session.accept_stream(stream)
        channel = SignalChannel(stream)
        server = session.peername
        try:
            if server is None:
                raise PunchFailed("not connected to the server")
            start = await channel.expect(PunchStart, SIGNAL_TIMEOUT_S)
            with PunchPort(local_ip_of(session)) as port:
                await send_probe(port, server, start.token)
                if self._tls is None:
                    self._tls = p2p_server_context()
                context, fingerprint = self._tls
                channel.send(PunchReady(fingerprint))
                go = await channel.expect(PunchGo, SIGNAL_TIMEOUT_S)
                sock = await punch_meet(port, (go.host, go.port), listen=True)
            mux = await owner_p2p(
                sock, context, fingerprint, self._verifier, go.punch_id, self.settings
            )
        except (PunchFailed, OSError, TimeoutError, EOFError, RemoteProtocolError) as exc:
            reason = str(exc) or "timed out"
            logger.info("tunnelc: [proxy=%s] no P2P path: %s", name, reason)
            stream.abort(ErrorCode.CANCELLED, reason)
            return
        except StreamResetError as exc:
            logger.info("tunnelc: [proxy=%s] rendezvous ended: %s", name, exc.reason)
            return
        stream.close()
        peer = mux.peername or ("?", 0)
        logger.info("tunnelc: [proxy=%s] P2P session with %s:%s", name, peer[0], peer[1])
        mux.on_stream = lambda s: self._p2p_stream(mux, s)
        self.p2p_sessions.add(mux)
        self.spawn(self._watch(mux))

    def _p2p_stream(self, mux: MuxSession, stream: MuxStream) -> None:
        if stream.visitor is not None:
            stream.abort(ErrorCode.REFUSED, "visitor streams go to the server")
            return
        TCPProxy.handle_stream(self, mux, stream)

    async def _watch(self, mux: MuxSession) -> None:
        try:
            await mux.wait_closed()
        finally:
            self.p2p_sessions.discard(mux)
            logger.info("tunnelc: [proxy=%s] P2P session ended", self.config.name)

    def close(self) -> None:
        for mux in list(self.p2p_sessions):
            mux.abort(ErrorCode.NORMAL, "proxy closed")
        super().close()
