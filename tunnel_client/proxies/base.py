"""What every client-side proxy is: it serves the streams (or datagrams) the server sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.aio.connection import MuxSession
from protocol.aio.stream import MuxStream
from protocol.messages import NewProxy

from ..config import ProxyConfig

# How long the client waits for its local service to accept a connection.
LOCAL_DIAL_TIMEOUT_S = 10.0


@dataclass(slots=True)
class ProxyStatus:
    name: str
    type: str
    state: str  # "pending" | "running" | "refused" | "offline"
    public_urls: tuple[str, ...] = ()
    error: str = ""
    local: str = ""


class ClientProxy(Protocol):
    config: ProxyConfig

    def new_proxy_request(self) -> NewProxy: ...

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        """A user connection arrived for this proxy: serve it (own the task)."""

    def session_ended(self) -> None:
        """The control session is gone: drop per-session state (flows, captures in flight)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...
