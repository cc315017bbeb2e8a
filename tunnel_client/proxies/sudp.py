"""sudp proxy (owner side): each visitor stream is one UDP peer; its datagrams go to the
local service from a socket of its own, and the replies go back framed on the stream.

Bounds: streams per proxy are bounded by the server (maxStreamsPerProxy) and the mux; a
reply that finds the stream congested is dropped and counted (UDP semantics, no queue).
"""

from __future__ import annotations

import asyncio
import logging

from protocol.aio.connection import MuxSession
from protocol.aio.stream import MuxStream, StreamResetError
from protocol.dgramframe import DatagramDecoder, frame_datagram
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import NewProxy

from ..config import ProxyConfig
from ..inspect.store import CaptureStore
from .tcp import new_proxy_request

logger = logging.getLogger(__name__)


class _Local(asyncio.DatagramProtocol):
    """The local service's side of one visitor stream."""

    def __init__(self, proxy: SUDPProxy, stream: MuxStream) -> None:
        self.proxy = proxy
        self.stream = stream

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.stream.congested or self.stream.is_closed:
            self.proxy.dropped += 1  # UDP: lost rather than queued
            return
        self.stream.send(frame_datagram(data))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: the local service is not there (yet); the datagram is lost.
        logger.debug("sudp %s: %s", self.proxy.config.name, exc)


class SUDPProxy:
    def __init__(self, config: ProxyConfig, store: CaptureStore | None = None) -> None:
        self.config = config
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.local_error: str | None = None

    @property
    def visitors(self) -> int:
        return len(self._tasks)

    def new_proxy_request(self) -> NewProxy:
        return new_proxy_request(self.config)

    def proxy_ready(self, public_urls: tuple[str, ...]) -> None:
        return None

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(session, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, session: MuxSession, stream: MuxStream) -> None:
        cfg = self.config
        try:
            transport, _ = await session.loop.create_datagram_endpoint(
                lambda: _Local(self, stream), remote_addr=(cfg.local_ip, cfg.local_port)
            )
        except OSError as exc:
            self.local_error = f"cannot reach {cfg.local_ip}:{cfg.local_port}: {exc}"
            stream.abort(ErrorCode.DIAL_FAILED, self.local_error)
            return
        udp = transport
        self.local_error = None
        session.accept_stream(stream)
        decoder = DatagramDecoder()
        try:
            while data := await stream.read():
                for datagram in decoder.feed(data):
                    udp.sendto(datagram)
            decoder.finish()
            stream.close()
        except RemoteProtocolError as exc:
            stream.abort(ErrorCode.PROTOCOL_ERROR, str(exc))
        except (StreamResetError, ConnectionError):
            pass  # the visitor or its session went away; nothing to tell
        finally:
            udp.close()

    def session_ended(self) -> None:
        return None

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
