"""`http_proxy`: a forward HTTP proxy, with CONNECT and optional basic auth.

The request head is read (bounded by MAX_HEAD_BYTES) and parsed by h11. CONNECT dials the
target, answers 200 and relays bytes. Any other method carries an absolute URL: the head is
rewritten to origin form without the Proxy-* and hop-by-hop headers, with `Connection: close`,
sent to the target, and the rest of the connection is relayed as is. One request per
connection keeps every request on the host it names; clients reconnect for the next one.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Final

import h11

from protocol.aio.stream import MuxStream

from .auth import basic_auth_ok
from .base import DIAL_TIMEOUT_S, Splice, close_writer, logger, open_stream_plugin, relay
from .config import PluginConfig

MAX_HEAD_BYTES: Final = 64 * 1024  # the request line and headers
HEAD_TIMEOUT_S: Final = 30.0  # to receive them
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    }
)


class HTTPProxyPlugin:
    def __init__(self, config: PluginConfig) -> None:
        self.config = config

    async def serve(self, stream: MuxStream, splice: Splice) -> None:
        reader, writer = await open_stream_plugin(stream, splice)
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError, OSError):
            await _reply(writer, 400, "Bad Request", "the request head is incomplete or too large")
            return
        request = _parse(head)
        if request is None:
            await _reply(writer, 400, "Bad Request", "this is not an HTTP/1.x request")
            return
        if not self._authorized(request):
            await _reply(
                writer,
                407,
                "Proxy Authentication Required",
                "proxy authentication required",
                extra=b'Proxy-Authenticate: Basic realm="tunnelc"\r\n',
            )
            return
        target = _target(request)
        if target is None:
            await _reply(writer, 400, "Bad Request", "the request names no host to go to")
            return
        host, port, path = target
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                upstream = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            logger.info("tunnelc: http_proxy: dial %s:%d failed: %s", host, port, exc)
            await _reply(writer, 502, "Bad Gateway", f"cannot reach {host}:{port}")
            return
        if request.method == b"CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            upstream[1].write(_origin_head(request, path))
        await relay((reader, writer), upstream)

    def _authorized(self, request: h11.Request) -> bool:
        user, password = self.config.http_user, self.config.http_password
        if user is None or password is None:
            return True
        for name, value in request.headers:
            if name == b"proxy-authorization":
                return basic_auth_ok(value.decode("latin-1"), user, password)
        return False

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


def _parse(head: bytes) -> h11.Request | None:
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    parser.receive_data(head)
    try:
        event = parser.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


def _target(request: h11.Request) -> tuple[str, int, bytes] | None:
    """(host, port, origin-form path) the request is for."""
    text = request.target.decode("ascii", "replace")
    if request.method == b"CONNECT":
        url = urllib.parse.urlsplit("//" + text)
        default_port = 443
        path = b""
    else:
        url = urllib.parse.urlsplit(text)
        if url.scheme != "http":
            return None  # origin-form (a plain request sent to us) or another scheme
        default_port = 80
        path = (url.path or "/").encode() + (b"?" + url.query.encode() if url.query else b"")
    try:
        port = url.port or default_port
    except ValueError:
        return None
    if not url.hostname:
        return None
    return url.hostname, port, path


def _origin_head(request: h11.Request, path: bytes) -> bytes:
    lines = [request.method + b" " + path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers if name not in _HOP_BY_HOP]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _reply(
    writer: asyncio.StreamWriter, status: int, phrase: str, body: str, *, extra: bytes = b""
) -> None:
    data = (body + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {phrase}\r\n".encode()
        + extra
        + b"Content-Type: text/plain; charset=utf-8\r\n"
        + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass  # the user went away before the error reached them (expected)
    await close_writer(writer)
