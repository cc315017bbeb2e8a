"""`unix_domain_socket`: each user connection is spliced to a Unix socket (`unixPath`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from protocol.aio.stream import MuxStream

from .base import DIAL_TIMEOUT_S, Splice, reject
from .config import PluginConfig


class UnixSocketPlugin:
    def __init__(self, config: PluginConfig) -> None:
        assert config.unix_path is not None  # required by the config rules
        self.path: Path = config.unix_path

    async def serve(self, stream: MuxStream, splice: Splice) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                await loop.create_unix_connection(lambda: splice(stream), str(self.path))
        except (OSError, TimeoutError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
            reject(stream, f"dial unix:{self.path} failed: {reason}")
            return
        await stream.wait_closed()

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None
