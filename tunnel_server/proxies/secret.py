"""Secret proxies (stcp, sudp): no public port; visitors reach them through their own client.

A visitor's client opens a stream to tunneld with a `visitor_open` header
(tunnel_server/visitorgate.py checks its proof and the proxy's allowUsers). The proxy then
opens a stream to its owner's client, as a tcp proxy does for a public connection, and joins
the two streams: bytes flow visitor client -> tunneld -> owner client and back, inside the two
clients' TLS sessions. An sudp proxy is the same join; its clients frame datagrams on the
stream (tunnel_client/proxies/sudp.py), so tunneld never looks inside.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from protocol.aio.stream import MuxStream, StreamResetError
from protocol.errors import ErrorCode
from protocol.messages import NewProxy
from protocol.names import name_problem
from protocol.proxytype import ProxyType
from protocol.visitorauth import VERIFIER_BYTES

from .base import ProxyContext, ProxyRefused
from .userconn import UserConnRefused, UserConns

logger = logging.getLogger(__name__)

# Bytes read from one side of a joined pair before writing them to the other (one frame).
JOIN_CHUNK_BYTES: Final = 64 * 1024
ANY_USER: Final = "*"


class SecretProxy:
    """What stcp and sudp share on the server: the verifier, allowUsers and the joins."""

    type = ProxyType.STCP

    def __init__(self, ctx: ProxyContext, request: NewProxy, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.verifier = request.secret_verifier
        self.allow_users = request.allow_users
        self.public_urls: tuple[str, ...] = ()
        self.public_note = "visitors only: no public port"
        self._joins: dict[asyncio.Task[None], str] = {}  # join task -> visitor user
        # The owner's streams: bounded by maxStreamsPerProxy, counted, IP rules applied to the
        # visitor's client address (the one user-connection path of every kind).
        self.conns = UserConns(ctx, name, str(self.type), holds_socket=False)
        self.visitors_total = 0

    async def start(self) -> None:
        if len(self.verifier) != VERIFIER_BYTES:
            raise ProxyRefused(f"a {self.type} proxy needs a secretKey")
        for user in self.allow_users:
            problem = None if user == ANY_USER else name_problem("user", user)
            if problem:
                raise ProxyRefused(f"allowUsers: {problem}")

    def allows(self, visitor_user: str) -> bool:
        """frp's rule: the owner's own user always; others when named or with "*"."""
        return (
            visitor_user == self.ctx.user
            or ANY_USER in self.allow_users
            or visitor_user in self.allow_users
        )

    @property
    def visitors_active(self) -> int:
        return len(self._joins)

    def visitor_list(self) -> tuple[str, ...]:
        """The user of each visitor connection joined now (the dashboard shows them)."""
        return tuple(sorted(self._joins.values()))

    def join(self, visitor: MuxStream, visitor_user: str, peer: tuple[str, int]) -> str:
        """Open the owner's stream and join it to `visitor`; a refusal reason, or ""."""
        try:
            owner = self.conns.open_stream(peer)
        except UserConnRefused as exc:
            return exc.reason
        self.visitors_total += 1
        task = asyncio.get_running_loop().create_task(self._run_join(visitor, owner))
        self._joins[task] = visitor_user
        task.add_done_callback(self._joined_done)
        return ""

    def _joined_done(self, task: asyncio.Task[None]) -> None:
        self._joins.pop(task, None)

    async def _run_join(self, visitor: MuxStream, owner: MuxStream) -> None:
        try:
            try:
                await owner.wait_accepted()
            except StreamResetError as exc:
                # The owner's client could not reach its local service (or did not answer).
                visitor.abort(exc.code, exc.reason)
                return
            if visitor.is_closed:
                owner.abort(ErrorCode.CANCELLED, "the visitor left")
                return
            visitor.session.accept_stream(visitor)
            async with asyncio.TaskGroup() as group:
                group.create_task(_pump(visitor, owner))
                group.create_task(_pump(owner, visitor))
        except asyncio.CancelledError:
            visitor.abort(ErrorCode.CANCELLED, "proxy closed")
            owner.abort(ErrorCode.CANCELLED, "proxy closed")
            raise

    def refresh_urls(self) -> bool:
        return False

    def close(self) -> None:
        for task in list(self._joins):
            task.cancel()
        self.conns.abort_all("proxy closed")

    async def wait_closed(self) -> None:
        if self._joins:
            await asyncio.gather(*self._joins, return_exceptions=True)


class STCPProxy(SecretProxy):
    type = ProxyType.STCP


class SUDPProxy(SecretProxy):
    type = ProxyType.SUDP


async def _pump(src: MuxStream, dst: MuxStream) -> None:
    """Copy src to dst until src ends (then end dst) or either is reset (then reset both)."""
    try:
        while data := await src.read(JOIN_CHUNK_BYTES):
            await dst.write(data)
        dst.write_eof()
    except (StreamResetError, ConnectionError) as exc:
        # One side reset or its session went away: the other side must see a reset too.
        code = exc.code if isinstance(exc, StreamResetError) else ErrorCode.CANCELLED
        reason = exc.reason if isinstance(exc, StreamResetError) else str(exc)
        src.abort(code, reason)
        dst.abort(code, reason)
