"""xtcp on the server: a secret proxy whose visitors may meet its owner peer to peer.

tunneld is the rendezvous (protocol/punch.py has the whole exchange). A visitor stream whose
`visitor_open.purpose` is "punch" passed the same checks as any stcp visitor (visitorgate.py:
proof, nonce, allowUsers); this module then opens a rendezvous stream to the owner, hands each
side a probe token, waits for both probes (tunnel_server/punchbroker.py), and tells each side
the other's observed address. The P2P connection itself never touches tunneld.

A visitor connection without "punch" is relayed exactly as stcp relays it (the fallback).
Every stream tunneld opens to the owner starts with one kind byte (KIND_RELAY or
KIND_RENDEZVOUS), so the owner's client knows which it got.

Bounds: MAX_RENDEZVOUS_PER_PROXY at once; each one within RENDEZVOUS_TIMEOUT_S up to the go
signal and PUNCH_RESULT_TIMEOUT_S for the visitor's result.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Final

from protocol.aio.signals import SignalChannel
from protocol.aio.stream import MuxStream, StreamResetError
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import PUNCH_ID_BYTES, NewProxy, PunchDone, PunchGo, PunchReady, PunchStart
from protocol.names import peer_text
from protocol.proxytype import ProxyType
from protocol.punch import KIND_RELAY, KIND_RENDEZVOUS

from ..punchbroker import BrokerFull, PunchBroker, PunchCounters
from .base import ProxyContext
from .secret import SecretProxy
from .userconn import UserConnRefused

logger = logging.getLogger(__name__)

MAX_RENDEZVOUS_PER_PROXY: Final = 16
# From the visitor's punch request to the go signal: both probes and both ready signals.
RENDEZVOUS_TIMEOUT_S: Final = 10.0
# From the go signal to the visitor's result (its connect attempts, TLS and proofs).
PUNCH_RESULT_TIMEOUT_S: Final = 20.0


class XTCPProxy(SecretProxy):
    type = ProxyType.XTCP

    def __init__(self, ctx: ProxyContext, request: NewProxy, name: str) -> None:
        super().__init__(ctx, request, name)
        self._rendezvous: set[asyncio.Task[None]] = set()
        self.punches = PunchCounters()  # this proxy's rendezvous (the broker counts them all)

    def join(self, visitor: MuxStream, visitor_user: str, peer: tuple[str, int]) -> str:
        """A relayed visitor connection, as stcp, after the kind byte."""
        try:
            owner = self.conns.open_stream(peer)
        except UserConnRefused as exc:
            return exc.reason
        owner.send(KIND_RELAY)
        self.visitors_total += 1
        task = asyncio.get_running_loop().create_task(self._run_join(visitor, owner))
        self._joins[task] = visitor_user
        task.add_done_callback(self._joined_done)
        return ""

    def rendezvous(
        self, visitor: MuxStream, visitor_user: str, peer: tuple[str, int], broker: PunchBroker
    ) -> str:
        """Start a rendezvous between `visitor` and the owner; a refusal reason, or ""."""
        if len(self._rendezvous) >= MAX_RENDEZVOUS_PER_PROXY:
            return f"{MAX_RENDEZVOUS_PER_PROXY} P2P rendezvous of this proxy are in progress"
        try:
            owner = self.conns.open_stream(peer)
        except UserConnRefused as exc:
            return exc.reason
        owner.send(KIND_RENDEZVOUS)
        broker.counters.rendezvous += 1
        self.punches.rendezvous += 1
        task = asyncio.get_running_loop().create_task(
            self._run_rendezvous(visitor, owner, visitor_user, broker)
        )
        self._rendezvous.add(task)
        task.add_done_callback(self._rendezvous.discard)
        return ""

    async def _run_rendezvous(
        self, visitor: MuxStream, owner: MuxStream, visitor_user: str, broker: PunchBroker
    ) -> None:
        tokens: list[bytes] = []
        who = f"[proxy={self.name} visitor={peer_text(visitor_user)}]"
        try:
            visitor.session.accept_stream(visitor)
            v, o = SignalChannel(visitor), SignalChannel(owner)
            async with asyncio.timeout(RENDEZVOUS_TIMEOUT_S):
                token_v, seen_v = broker.expect()
                tokens.append(token_v)
                token_o, seen_o = broker.expect()
                tokens.append(token_o)
                v.send(PunchStart(token_v))
                o.send(PunchStart(token_o))
                ready_o = await o.expect(PunchReady, RENDEZVOUS_TIMEOUT_S)
                await v.expect(PunchReady, RENDEZVOUS_TIMEOUT_S)
                addr_v = await seen_v
                addr_o = await seen_o
            punch_id = secrets.token_bytes(PUNCH_ID_BYTES)
            v.send(PunchGo(addr_o[0], addr_o[1], ready_o.fingerprint, punch_id))
            o.send(PunchGo(addr_v[0], addr_v[1], b"", punch_id))
            logger.info(
                "tunneld: %s xtcp rendezvous: visitor at %s:%d, owner at %s:%d",
                who,
                *addr_v,
                *addr_o,
            )
            done = await v.expect(PunchDone, PUNCH_RESULT_TIMEOUT_S)
            if done.ok:
                broker.counters.direct += 1
                self.punches.direct += 1
                logger.info("tunneld: %s xtcp direct path up", who)
            else:
                broker.counters.failed += 1
                self.punches.failed += 1
                logger.info(
                    "tunneld: %s xtcp punch failed (the visitor relays): %s",
                    who,
                    peer_text(done.reason),
                )
            visitor.close()
            owner.close()
        except BrokerFull as exc:
            broker.counters.failed += 1
            self.punches.failed += 1
            visitor.abort(ErrorCode.REFUSED, str(exc))
            owner.abort(ErrorCode.CANCELLED, str(exc))
        except (TimeoutError, RemoteProtocolError, EOFError) as exc:
            broker.counters.failed += 1
            self.punches.failed += 1
            reason = str(exc) or "the rendezvous timed out"
            logger.info("tunneld: %s xtcp rendezvous failed: %s", who, peer_text(reason))
            code = (
                ErrorCode.PROTOCOL_ERROR
                if isinstance(exc, RemoteProtocolError)
                else ErrorCode.CANCELLED
            )
            visitor.abort(code, reason)
            owner.abort(code, reason)
        except (StreamResetError, ConnectionError) as exc:
            broker.counters.failed += 1
            self.punches.failed += 1
            # One side reset or its session went away: tell the other.
            visitor.abort(ErrorCode.CANCELLED, str(exc))
            owner.abort(ErrorCode.CANCELLED, str(exc))
        except asyncio.CancelledError:
            visitor.abort(ErrorCode.CANCELLED, "proxy closed")
            owner.abort(ErrorCode.CANCELLED, "proxy closed")
            raise
        finally:
            for token in tokens:
                broker.forget(token)

    def p2p_counts(self) -> dict[str, int]:
        """Rendezvous started, direct paths made, punches failed (the dashboard's `p2p`)."""
        p = self.punches
        return {"rendezvous": p.rendezvous, "direct": p.direct, "failed": p.failed}

    def close(self) -> None:
        for task in list(self._rendezvous):
            task.cancel()
        super().close()

    async def wait_closed(self) -> None:
        if self._rendezvous:
            await asyncio.gather(*self._rendezvous, return_exceptions=True)
        await super().wait_closed()
