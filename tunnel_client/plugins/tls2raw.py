"""`tls2raw`: terminate the user's TLS here and pass the plain bytes to `localAddr`."""

from __future__ import annotations

import asyncio
import ssl

from protocol.aio.stream import MuxStream

from .base import DIAL_TIMEOUT_S, Splice, close_writer, logger, open_stream_plugin, relay
from .config import PluginConfig

TLS_HANDSHAKE_TIMEOUT_S = 15.0


class TLSToRawPlugin:
    def __init__(self, config: PluginConfig, tls: ssl.SSLContext) -> None:
        assert config.local_addr is not None  # required by the config rules
        self.host, self.port = config.local_addr
        self.tls = tls

    async def serve(self, stream: MuxStream, splice: Splice) -> None:
        try:
            async with asyncio.timeout(TLS_HANDSHAKE_TIMEOUT_S):
                user = await open_stream_plugin(stream, splice, self.tls)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            logger.debug("tls2raw: TLS handshake failed: %s", exc)  # a bad or slow client
            stream.abort(reason=f"TLS handshake failed: {exc}")
            return
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                local = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            logger.warning("tunnelc: tls2raw: dial %s:%d failed: %s", self.host, self.port, exc)
            await close_writer(user[1])
            return
        await relay(user, local)

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None
