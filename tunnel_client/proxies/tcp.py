"""TCP proxy (client side): dial the local service for each stream and splice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

from protocol.aio.connection import MuxSession
from protocol.aio.splice import dial_and_splice
from protocol.aio.stream import MuxStream
from protocol.messages import NewProxy

from ..config import ProxyConfig
from ..inspect.store import CaptureStore
from .base import LOCAL_DIAL_TIMEOUT_S

logger = logging.getLogger(__name__)


def new_proxy_request(config: ProxyConfig) -> NewProxy:
    return NewProxy(
        name=config.name,
        type=str(config.type),
        remote_port=config.remote_port or 0,
        custom_domains=tuple(config.custom_domains),
        subdomain=config.subdomain or "",
        locations=tuple(config.locations),
        http_user=config.http_user or "",
        http_password=config.http_password.reveal() if config.http_password else "",
        host_header_rewrite=config.host_header_rewrite or "",
        request_headers=dict(config.request_headers_set),
        response_headers=dict(config.response_headers_set),
        redirect_http=bool(config.redirect_http),
        hsts_max_age=config.hsts_max_age or 0,
        backend_protocol=config.backend_protocol or "",
    )


class TCPProxy:
    """Each stream: dial localIP:localPort, accept on success, reset with the reason if not."""

    def __init__(self, config: ProxyConfig, store: CaptureStore | None = None) -> None:
        self.config = config
        self._tasks: set[asyncio.Task[object]] = set()

    def new_proxy_request(self) -> NewProxy:
        return new_proxy_request(self.config)

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        self.spawn(
            dial_and_splice(
                session,
                stream,
                self.config.local_ip,
                self.config.local_port,
                LOCAL_DIAL_TIMEOUT_S,
            )
        )

    def spawn(self, work: Coroutine[object, object, object]) -> None:
        """Run one stream's task; this proxy owns it (cancelled and awaited at close)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def session_ended(self) -> None:
        return None

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
