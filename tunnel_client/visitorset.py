"""All `[[visitors]]` of one client: one object per entry by type, handed each new session."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from protocol.aio.connection import MuxSession
from protocol.proxytype import ProxyType

from .visitorconfig import VisitorConfig

# The visitors and the hole punching (about 0.2 MiB) load only for a config with visitors.
if TYPE_CHECKING:
    from .visitors import Visitor


def visitor_kinds() -> dict[str, type[Visitor]]:
    """The visitor class of each visitor type."""
    from .visitors import STCPVisitor, SUDPVisitor
    from .xtcpvisitor import XTCPVisitor

    return {ProxyType.STCP: STCPVisitor, ProxyType.SUDP: SUDPVisitor, ProxyType.XTCP: XTCPVisitor}


class VisitorSet:
    """All visitors of one client; the client hands them each new session."""

    def __init__(self, configs: tuple[VisitorConfig, ...], user: str) -> None:
        self.visitors: list[Visitor] = []
        if not configs:
            return
        from .xtcpvisitor import XTCPVisitor

        kinds = visitor_kinds()
        self.visitors = [kinds[c.type](c, user) for c in configs]
        by_name = {v.config.name: v for v in self.visitors}
        for visitor in self.visitors:
            # fallbackTo names an stcp visitor of this file (checked when the config loads).
            if isinstance(visitor, XTCPVisitor) and visitor.config.fallback_to is not None:
                visitor.fallback = by_name.get(visitor.config.fallback_to)

    async def start(self) -> None:
        for visitor in self.visitors:
            await visitor.start()

    def attach(self, session: MuxSession | None) -> None:
        if not self.visitors:
            return
        from .xtcpvisitor import XTCPVisitor

        for visitor in self.visitors:
            if isinstance(visitor, XTCPVisitor):
                visitor.attach_session(session)
            else:
                visitor.session = session

    def status(self) -> list[dict[str, object]]:
        return [v.status() for v in self.visitors]

    def close(self) -> None:
        for visitor in self.visitors:
            visitor.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(*(v.wait_closed() for v in self.visitors))
