"""Visitor streams: a client asks to be joined to a secret proxy (stcp, sudp).

A logged-in client may open a stream whose SYN carries `visitor_open` (docs/protocol.md 6.2).
The gate checks, in order: the session's visitor bound, the target proxy (a secret proxy of
the visitor's type), the timestamp window, the proof
(protocol/visitorauth.py, constant time), the nonce (never seen inside the window), then
the proxy's allowUsers. Every refusal resets
the stream with REFUSED and one line the visitor's client shows; a failed proof counts in the
server's auth failures like a failed login. Nothing here learns the secretKey itself.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode
from protocol.messages import VisitorOpen
from protocol.names import peer_text
from protocol.punch import PURPOSE_PUNCH
from protocol.visitorauth import MAX_CLOCK_SKEW_S, proof_ok, target_name, visitor_proof

from .proxies.secret import SecretProxy
from .proxies.xtcp import XTCPProxy
from .punchbroker import PunchBroker

if TYPE_CHECKING:
    from .server import TunnelServer
    from .session import ServerSession

logger = logging.getLogger(__name__)

# Nonces of accepted and refused visitor proofs seen within the clock window, server-wide.
# When it is full of nonces still inside the window, new visitors are refused (retry later)
# rather than forgetting a nonce that could then be replayed.
MAX_RECENT_NONCES: Final = 65_536
WRONG_SECRET: Final = "the secretKey does not match the proxy's"


class RecentNonces:
    """Nonces of valid visitor proofs, kept while a proof could still be replayed."""

    def __init__(self, limit: int = MAX_RECENT_NONCES) -> None:
        self.limit = limit
        self._nonces: OrderedDict[bytes, float] = OrderedDict()  # nonce -> when it expires

    def __len__(self) -> int:
        return len(self._nonces)

    def remember(self, nonce: bytes, now: float) -> str:
        """Record `nonce` seen at `now` (seconds); a refusal reason, or ""."""
        nonces = self._nonces
        while nonces:
            oldest, expires = next(iter(nonces.items()))
            if expires > now:
                break
            del nonces[oldest]
        if nonce in nonces:
            return "this visitor proof was already used (a replay)"
        if len(nonces) >= self.limit:
            return "too many visitor connections in the last minutes; retry later"
        # A proof is valid while |timestamp - now| <= skew, so for at most 2 * skew after
        # it is first seen.
        nonces[nonce] = now + 2 * MAX_CLOCK_SKEW_S
        return ""


class VisitorGate:
    """The server-wide part: nonces seen recently. Per-session counts live on the session."""

    def __init__(self, server: TunnelServer) -> None:
        self._server = server
        self.nonces = RecentNonces()
        self.punches = PunchBroker()  # xtcp rendezvous: probe tokens (punchbroker.py)

    def open(self, session: ServerSession, stream: MuxStream) -> None:
        """The `on_stream` of a logged-in session."""
        request = stream.visitor
        if request is None:
            stream.abort(ErrorCode.REFUSED, "a client may only open visitor streams")
            return
        reason = self._refusal(session, stream, request)
        if reason:
            self._server.stats.visitor_refusals += 1
            logger.info(
                "tunneld: [client=%s visitor=%s] refused for %s: %s",
                session.client_id,
                peer_text(request.visitor_name),
                peer_text(target_name(request.server_user, request.server_name)),
                reason,
            )
            stream.abort(ErrorCode.REFUSED, reason)
            return
        self._server.stats.visitor_joins += 1
        session.visitor_streams.add(stream)
        stream.add_close_callback(session.visitor_streams.discard)

    def _refusal(self, session: ServerSession, stream: MuxStream, request: VisitorOpen) -> str:
        limit = self._server.config.max_visitor_conns_per_client
        if len(session.visitor_streams) >= limit:
            return f"this client has {limit} visitor connections open (maxVisitorConnsPerClient)"
        server_user = request.server_user
        target = target_name(server_user, request.server_name)
        entry = self._server.proxies.get(target)
        proxy = entry.proxy if entry is not None else None
        if not isinstance(proxy, SecretProxy):
            return (
                f"no stcp, sudp or xtcp proxy named {request.server_name!r} of user {server_user!r}"
            )
        now = time.time()
        skew = request.timestamp - now
        if abs(skew) > MAX_CLOCK_SKEW_S:
            return f"the visitor's clock is {skew:+.0f}s off the server's; fix the clock"
        expected = visitor_proof(
            proxy.verifier, request.type, session.user, target, request.timestamp, request.nonce
        )
        if not proof_ok(expected, request.proof):
            self._server.stats.auth_failures += 1
            return WRONG_SECRET
        reason = self.nonces.remember(request.nonce, now)  # only valid proofs can be replayed
        if reason:
            return reason
        if request.type != proxy.type:
            return f"{request.server_name!r} is an {proxy.type} proxy, not {request.type}"
        if not proxy.allows(session.user):
            return f"user {session.user!r} is not in the proxy's allowUsers"
        peer = session.mux.peername or ("", 0)
        if request.purpose == PURPOSE_PUNCH:
            if not isinstance(proxy, XTCPProxy):
                return f"{request.server_name!r} is an {proxy.type} proxy: no P2P"
            return proxy.rendezvous(stream, session.user, peer, self.punches)
        return proxy.join(stream, session.user, peer)
