"""frp's tcpmux with the httpconnect multiplexer (tcpmuxHTTPConnectPort): many TCP services
behind one public port, each chosen by the host of an HTTP CONNECT request.

A visitor (for example `ssh -o ProxyCommand="nc -X connect -x HOST:PORT %h %p"`) sends
`CONNECT name:port HTTP/1.1` and its headers. The listener reads that head (at most
MAX_HEAD_BYTES, within `head_timeout_s`), parses it with httptools, looks the name up in the
tcpmux router (customDomains and subdomain, as http routes; routeByHTTPUser and
httpUser/httpPassword read the Proxy-Authorization header), opens a stream to the proxy and
then, as frp does:
- passthrough off: answers `200 Connection established` itself and splices what follows;
- passthrough on (`tcpmuxPassthrough`): forwards the CONNECT head too, and the service behind
  the tunnel (an HTTP proxy) answers it.

Anything else gets one HTTP answer and a close: 400 for a head that is not a CONNECT or is
malformed, 431 for one over the size bound, 408 for one too slow, 404 for a name no proxy
serves, 407 (with Proxy-Authenticate) for missing or wrong credentials, 502 when the tunnel
client cannot take the connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import httptools

from .inbound import InboundProtocol
from .listener import DEFAULT_MAX_CONNECTIONS, SHUTDOWN_GRACE_S, VhostListener
from .routing import HTTPRoute, VhostRouter
from .splice import SpliceCounters, splice
from .upstream import UpstreamError, close_stream

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES: Final = 8 * 1024  # a CONNECT head (request line and headers)
HEAD_TIMEOUT_S: Final = 10.0  # the whole head must arrive within this
OPEN_TIMEOUT_S: Final = 10.0  # bound on opening the stream to the client
ESTABLISHED: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"
REASONS: Final = {
    400: "Bad Request",
    404: "Not Found",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


def answer(status: int, detail: str) -> bytes:
    """A small plain-text HTTP answer that closes the connection."""
    body = f"tunnelkit tcpmux: {detail}\n".encode()
    extra = b'Proxy-Authenticate: Basic realm="tunnelkit"\r\n' if status == 407 else b""
    return (
        f"HTTP/1.1 {status} {REASONS[status]}\r\n".encode()
        + extra
        + b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class ConnectHead:
    """httptools callbacks: the request target and the headers we need."""

    def __init__(self) -> None:
        self.target = b""
        self.proxy_authorization = b""

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"proxy-authorization":
            self.proxy_authorization = value


class HeadError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_connect(data: bytes) -> tuple[ConnectHead, int] | None:
    """(head, offset of the bytes after it), None while incomplete; HeadError if not a CONNECT."""
    head = ConnectHead()
    parser = httptools.HttpRequestParser(head)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade as upgrade:
        if parser.get_method() != b"CONNECT":
            raise HeadError(400, "only CONNECT requests are served on this port") from None
        return head, int(upgrade.args[0])
    except httptools.HttpParserError:
        raise HeadError(400, "malformed request") from None
    if b"\r\n\r\n" in data:  # a complete request that is not a CONNECT
        raise HeadError(400, "only CONNECT requests are served on this port")
    return None


def connect_host(target: bytes) -> str:
    """The name of a CONNECT target ("name:port" or "[v6]:port"), lowercase."""
    text = target.decode("latin-1")
    if text.startswith("["):
        return text[: text.find("]") + 1].lower()
    return text.rsplit(":", 1)[0].lower() if ":" in text else text.lower()


def basic_credentials(header: bytes) -> tuple[str, str] | None:
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    if not sep:
        return None
    return user.decode("utf-8", "replace"), password.decode("utf-8", "replace")


def check_credentials(route: HTTPRoute, credentials: tuple[str, str] | None) -> bool:
    """httpUser/httpPassword of a tcpmux proxy are checked against Proxy-Authorization."""
    if route.http_user is None and route.http_password is None:
        return True
    if credentials is None:
        return False
    user_ok = hmac.compare_digest(credentials[0].encode(), (route.http_user or "").encode())
    password_ok = hmac.compare_digest(credentials[1].encode(), (route.http_password or "").encode())
    return user_ok and password_ok


class TCPMuxServer(VhostListener):
    """The tcpmux httpconnect listener. `start`, then `close` + `wait_closed`."""

    _kind = "tcpmux"

    def __init__(
        self,
        router: VhostRouter,
        *,
        passthrough: bool = False,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    ) -> None:
        super().__init__(max_connections=max_connections, shutdown_grace_s=shutdown_grace_s)
        self._router = router
        self.passthrough = passthrough
        self._head_timeout_s = head_timeout_s
        self._open_timeout_s = open_timeout_s
        # A cluster node's relay (cluster/relay_tcpmux.py) for hosts another node serves:
        # (conn, host, user, bytes read) -> None if not, else close cleanly (True) or abort.
        self.remote: Callable[[InboundProtocol, str, str, bytes], Awaitable[bool | None]] | None = (
            None
        )

    async def _read_head(self, conn: InboundProtocol) -> tuple[ConnectHead, bytes, int]:
        """(head, every byte read, offset after the head); HeadError when there is none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._head_timeout_s
        buffer = bytearray()
        while True:
            item = conn.pop()
            if item is None:
                if self.closing:
                    raise HeadError(502, "the server is shutting down")
                if not await conn.wait(deadline):
                    raise HeadError(408, f"no complete CONNECT within {self._head_timeout_s:g}s")
                continue
            if not isinstance(item, bytes):
                raise HeadError(400, "the connection ended before the CONNECT head")
            buffer += item
            parsed = parse_connect(bytes(buffer[: MAX_HEAD_BYTES + 1]))
            if parsed is not None:
                head, offset = parsed
                return head, bytes(buffer), offset
            if len(buffer) > MAX_HEAD_BYTES:
                raise HeadError(431, f"the CONNECT head is over {MAX_HEAD_BYTES} bytes")

    async def _serve_one(self, conn: InboundProtocol) -> bool:
        try:
            head, data, offset = await self._read_head(conn)
            host = connect_host(head.target)
            credentials = basic_credentials(head.proxy_authorization)
            user = credentials[0] if credentials else ""
            route = self._router.lookup(host, "/", user)
            if route is None and self.remote is not None:
                relayed = await self.remote(conn, host, user, data)
                if relayed is not None:  # another node of the cluster served it
                    return relayed
            if route is None:
                raise HeadError(404, f"no tunnel serves {host!r} here")
            if not check_credentials(route, credentials):
                raise HeadError(407, "wrong or missing Proxy-Authorization")
        except HeadError as exc:
            if not conn.lost:
                logger.debug("tcpmux: %s from %s: %s", exc.status, conn.peer[0], exc.detail)
                conn.write(answer(exc.status, exc.detail))
            return not conn.lost
        try:
            async with asyncio.timeout(self._open_timeout_s):
                stream = await route.opener(conn.peer)
        except TimeoutError:
            conn.write(answer(504, "the tunnel did not open in time"))
            return True
        except (UpstreamError, ConnectionError, OSError) as exc:
            reason = exc.reason if isinstance(exc, UpstreamError) else str(exc)
            conn.write(answer(502, reason))
            return True
        if conn.lost:
            stream.abort()
            return False
        first = data if self.passthrough else data[offset:]
        if not self.passthrough:
            conn.write(ESTABLISHED)
        counters = SpliceCounters()
        try:
            if first:
                try:
                    await stream.write(first)
                except (ConnectionError, OSError) as exc:
                    logger.debug("[proxy=%s] tcpmux write failed: %r", route.proxy_key, exc)
                    stream.abort()
                    return False
                counters.to_app += len(first)
            await splice(conn, stream, counters)
        except BaseException:
            stream.abort()
            raise
        await close_stream(stream)
        return not conn.lost
