"""Raw HTTP for attack tests: a byte-recording relay in front of an app, a raw visitor, RSS.

`RecordingRelay` sits between tunnelc and a local app (tunnelc's `localPort` is the relay's
port) and keeps every byte that reached the app, so a test can assert that a refused request
left *nothing* there. `raw_exchange` sends bytes to the vhost and reads what comes back until
the server closes or a deadline passes. `rss_bytes` reads a process's resident set size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

RELAY_READ_BYTES: Final = 64 * 1024
RAW_READ_TIMEOUT_S: Final = 15.0


class RecordingRelay:
    """A TCP relay on 127.0.0.1:0 to `app_port` that records what flows towards the app."""

    def __init__(self, app_port: int) -> None:
        self.app_port = app_port
        self.port = 0
        self.to_app = bytearray()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            app_reader, app_writer = await asyncio.open_connection("127.0.0.1", self.app_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, app_writer, record=True))
                group.create_task(self._pump(app_reader, writer, record=False))
        except* (ConnectionError, OSError):
            pass  # either side reset: the relay just ends, like a proxy would
        finally:
            writer.close()
            app_writer.close()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool
    ) -> None:
        while data := await reader.read(RELAY_READ_BYTES):
            if record:
                self.to_app += data
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


@contextlib.asynccontextmanager
async def recording_relay(app_port: int) -> AsyncIterator[RecordingRelay]:
    relay = RecordingRelay(app_port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


async def raw_exchange(port: int, data: bytes, timeout_s: float = RAW_READ_TIMEOUT_S) -> bytes:
    """Send `data` to 127.0.0.1:port and read the reply until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = bytearray()
        async with asyncio.timeout(timeout_s):
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(RELAY_READ_BYTES):
                    out += chunk
        return bytes(out)
    finally:
        writer.close()


def status_of(reply: bytes) -> int:
    """The status code of the first response in `reply` (0 if there is none)."""
    if not reply.startswith(b"HTTP/1."):
        return 0
    return int(reply[9:12])


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
