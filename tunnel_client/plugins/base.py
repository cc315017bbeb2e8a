"""What every client plugin is, and the socket plumbing they share.

A plugin serves one user connection at a time per call: `serve(stream)` gets the mux stream
the server opened and owns it until the connection ends. Most plugins speak a protocol
through a library that wants a real socket (aiohttp, ssl): `socket_for(stream)` joins the
stream to one end of a socketpair with the ordinary splice (so windows and backpressure work
as for any proxy) and returns the other end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode, TunnelError

logger = logging.getLogger(__name__)

RELAY_CHUNK_BYTES: Final = 64 * 1024  # one read per hop; the write drains before the next
STREAM_LIMIT_BYTES: Final = 64 * 1024  # StreamReader buffer (the read side pauses above it)
DIAL_TIMEOUT_S: Final = 10.0  # a plugin's own outbound connections
SELF_SIGNED_DAYS: Final = 365


# Builds the protocol that splices a stream to a socket: SpliceProtocol, or a throttled one.
Splice = Callable[[MuxStream], SpliceProtocol]


class ClientPlugin(Protocol):
    """One configured plugin; shared by every connection of its proxy."""

    async def serve(self, stream: MuxStream, splice: Splice) -> None:
        """Serve one user connection; return when it has ended. Join the stream to a socket
        only through `splice` (it carries the proxy's bandwidth limit)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


async def socket_for(stream: MuxStream, splice: Splice) -> socket.socket:
    """Splice `stream` (through `splice(stream)`) to one end of a fresh socketpair and return
    the other end."""
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: splice(stream), ours)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    return theirs


async def streams_for(
    sock: socket.socket, ssl_context: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Server-side asyncio streams over an accepted socket, TLS-terminated if asked."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT_BYTES)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=ssl_context)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def open_stream_plugin(
    stream: MuxStream, splice: Splice, ssl_context: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """`stream` as a pair of asyncio streams (the plugin's view of the user connection)."""
    return await streams_for(await socket_for(stream, splice), ssl_context)


async def relay(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy both ways until both directions ended; half-close passes through. Each write
    drains before the next read, so a slow side pauses the other (bounded by one chunk)."""

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(RELAY_CHUNK_BYTES):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(pump(a[0], b[1]))
            group.create_task(pump(b[0], a[1]))
    except* (ConnectionError, OSError) as errors:
        # A reset or broken pipe on either side: the other side is closed below (expected).
        logger.debug("plugin relay ended: %s", errors.exceptions[0])
    finally:
        for writer in (a[1], b[1]):
            writer.close()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close and wait, ignoring the peer having reset first (expected on abrupt ends)."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


def reject(stream: MuxStream, reason: str) -> None:
    """Reset a stream the plugin cannot serve, with the reason for the server's log."""
    stream.abort(ErrorCode.DIAL_FAILED, reason)


class PluginError(TunnelError):
    """A plugin cannot start (its certificate does not load); its proxy stays off."""


def server_tls_context(crt_path: Path | None, key_path: Path | None) -> ssl.SSLContext:
    """The TLS a plugin terminates: the given files, else a fresh self-signed certificate
    (as frp does when crtPath/keyPath are left out). Raises PluginError naming the files.

    The files are read when tunnelc starts the proxy, not by `verify`, as in frp: a config
    can be checked on another machine than the one holding the certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    if crt_path is not None and key_path is not None:
        try:
            context.load_cert_chain(crt_path, key_path)
        except OSError as exc:  # ssl.SSLError is an OSError
            reason = exc.strerror or str(exc)
            raise PluginError(
                f"plugin.crtPath: cannot load {crt_path} and {key_path} ({reason}); "
                "check both files"
            ) from None
        return context
    # cryptography is imported there: a client whose plugins bring their own files never needs it.
    from ..selfsigned import self_signed_context

    context, _ = self_signed_context("tunnelc plugin", SELF_SIGNED_DAYS, "tunnelc-plugin-")
    context.set_alpn_protocols(["http/1.1"])
    return context
