"""What every client-side proxy is: it serves the streams (or datagrams) the server sends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, cast

from protocol.aio.connection import MuxSession
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.messages import NewProxy

from ..config import ProxyConfig

# How long the client waits for its local service to accept a connection.
LOCAL_DIAL_TIMEOUT_S = 10.0


def public_port(public_urls: tuple[str, ...]) -> int:
    """The port of the first public URL ("tcp://host:6000" -> 6000); 0 if it has none."""
    for url in public_urls:
        port = url.rsplit(":", 1)[-1]
        if port.isdigit():
            return int(port)
    return 0


class PreambleSplice(SpliceProtocol):
    """A splice that writes `preamble` (a PROXY protocol header) to the socket first."""

    def __init__(self, stream: MuxStream, preamble: bytes) -> None:
        super().__init__(stream)
        self.preamble = preamble

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.preamble:
            cast(asyncio.Transport, transport).write(self.preamble)
        super().connection_made(transport)


@dataclass(slots=True)
class ProxyStatus:
    name: str
    type: str
    state: str  # "pending" | "running" | "refused" | "offline" | "unhealthy"
    public_urls: tuple[str, ...] = ()
    error: str = ""
    local: str = ""


class ClientProxy(Protocol):
    config: ProxyConfig

    def new_proxy_request(self) -> NewProxy: ...

    def proxy_ready(self, public_urls: tuple[str, ...]) -> None:
        """The server accepted the proxy at these public URLs."""

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        """A user connection arrived for this proxy: serve it (own the task)."""

    def session_ended(self) -> None:
        """The control session is gone: drop per-session state (flows, captures in flight)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...
