"""One HTTP/2 request through the tunnel: h2 stream in, HTTP/1.1 to the local service, h2 out.

`serve_stream` routes the request like the HTTP vhost (Host and path, basic auth, header rules,
X-Forwarded-*), opens one tunnel stream, writes the request head built by
`vhost.rewrite.request_head` and the body (chunked when the visitor gave no length), and parses
the response with httptools. The response goes back on the h2 stream within the visitor's
flow-control windows; the tunnel stream is closed after one exchange.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import httptools

from ..vhost.exchange import IDEMPOTENT_METHODS
from ..vhost.normalize import BadRequestTarget, normalize_path
from ..vhost.pages import render_page
from ..vhost.rewrite import Framing, basic_auth_user, request_head
from ..vhost.routing import HTTPRoute
from ..vhost.upstream import ByteStream, UpstreamError
from .h2c import h2c_exchange
from .h2conn import H2Visitor, StreamInput

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 64 * 1024
# Request headers HTTP/2 forbids or that name the connection, not the message (RFC 9113 8.2.2).
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"host",
    }
)


class _Response:
    """httptools callbacks: the response head, then body pieces.

    Interim (1xx) responses come first on the same parser: each new message starts afresh.
    Bytes that begin a message after the final response (the app sent more than it was
    asked for) mark the connection as not reusable and are dropped."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False  # the final (non-1xx) head
        self.interim = False  # inside a 1xx response
        self.body: list[bytes] = []
        self.done = False
        self.extra = False  # a message began after the final response

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True
            return
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.done:
            return
        status = self.parser.get_status_code()
        if status < 200:
            self.interim = True  # 100 Continue, 103 Early Hints: not forwarded
        else:
            self.status = status
            self.head_done = True

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        elif not self.done:
            self.done = True
            self.keep_alive = self.parser.should_keep_alive()

    keep_alive = False
    status = 0


class _StaleStream(Exception):
    """A reused stream turned out dead before any response byte: send the request again."""


async def serve_stream(v: H2Visitor, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)  # h2 may split cookies; HTTP/1.1 wants one header
        elif name not in _HOP_BY_HOP:
            regular.append((name, value))
    if cookies:
        regular.append((b"cookie", b"; ".join(cookies)))
    method = pseudo.get(b":method", b"GET")
    authority = pseudo.get(b":authority") or dict(headers).get(b"host", b"")
    host = authority.decode("latin-1")
    if method == b"CONNECT" or not authority:
        await send_page(v, stream_id, 405 if authority else 400, host or None, "not supported")
        return
    target = pseudo.get(b":path", b"/")
    query = target.find(b"?")
    raw_path = target if query < 0 else target[:query]
    try:
        path = normalize_path(raw_path)
    except BadRequestTarget as exc:
        await send_page(v, stream_id, 400, host, str(exc))
        return
    target = path + target[len(raw_path) :]
    authorization = next((val for key, val in regular if key == b"authorization"), None)
    route = v.router.lookup(host, path.decode("latin-1"), basic_auth_user(authorization))
    if route is None:
        await send_page(v, stream_id, 404, host, None, body=v.page_404)
        return
    if route.rules.auth is not None:
        if not route.rules.check_auth(authorization):
            await send_page(
                v, stream_id, 401, host, None, (b"www-authenticate", b'Basic realm="tunnelkit"')
            )
            return
    if route.backend_h2c:
        await _h2c(v, stream_id, route, host, headers, authority)
        return
    box = v.inputs[stream_id]
    if any(key == b"content-length" for key, _ in regular):
        framing = Framing.LENGTH
    elif box.ended and not box.items:
        framing = Framing.NONE
    else:
        framing = Framing.CHUNKED
    head = request_head(
        method=method,
        target=target,
        headers=regular,
        connection_tokens=frozenset(),
        rules=route.rules,
        host=authority,
        framing=framing,
        upgrade=None,
        peer_ip=v.peer[0].encode("ascii"),
        proto=b"https",
    )
    box.proxy = route.proxy_name  # from here on the request counts in the access log
    await _exchange(v, stream_id, route, host, head, framing, method)


async def _open(v: H2Visitor, stream_id: int, route: HTTPRoute, host: str) -> ByteStream | None:
    """The tunnel stream for one exchange, or None after an error page was sent."""
    try:
        async with asyncio.timeout(v.timeout_s):
            return await route.opener(v.peer)
    except TimeoutError:
        await send_page(v, stream_id, 504, host, "the tunnel did not open in time")
    except UpstreamError as exc:
        await send_page(v, stream_id, 502, host, exc.reason, note=route.offline_note)
    except (ConnectionError, OSError) as exc:
        await send_page(
            v, stream_id, 502, host, f"cannot reach the app: {exc}", note=route.offline_note
        )
    return None


def _network_failure(exc: BaseException) -> bool:
    """A reset or closed connection on either side, possibly from several tasks at once."""
    if isinstance(exc, ConnectionError | OSError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_network_failure(inner) for inner in exc.exceptions)
    return False


async def _h2c(
    v: H2Visitor,
    stream_id: int,
    route: HTTPRoute,
    host: str,
    headers: list[tuple[bytes, bytes]],
    authority: bytes,
) -> None:
    stream = await _open(v, stream_id, route, host)
    if stream is None:
        return
    try:
        await h2c_exchange(v, stream_id, stream, headers, authority, route.rules)
    except Exception as exc:
        stream.abort()
        if not _network_failure(exc):
            raise
        logger.debug("[proxy=%s] h2c stream %d failed: %r", route.proxy_key, stream_id, exc)
        v.reset(stream_id)
        return
    except BaseException:
        stream.abort()
        raise
    stream.close()


async def _acquire(
    v: H2Visitor, stream_id: int, route: HTTPRoute, host: str
) -> tuple[ByteStream, bool] | None:
    """An idle keep-alive stream to the route, or a new one; None after an error page."""
    stream = v.pool.take(route) if v.pool is not None else None
    if stream is not None:
        return stream, True
    opened = await _open(v, stream_id, route, host)
    return (opened, False) if opened is not None else None


async def _exchange(
    v: H2Visitor,
    stream_id: int,
    route: HTTPRoute,
    host: str,
    head: bytes,
    framing: Framing,
    method: bytes,
) -> None:
    # Only a request without a body can be sent again, and only if repeating it is harmless.
    replayable = framing is Framing.NONE and method in IDEMPOTENT_METHODS
    for _attempt in range(2):
        lease = await _acquire(v, stream_id, route, host)
        if lease is None:
            return
        stream, reused = lease
        try:
            keep = await _exchange_on(
                v,
                stream_id,
                route,
                host,
                stream,
                head,
                framing,
                method == b"HEAD",
                stale_ok=reused and replayable,
            )
        except _StaleStream:
            logger.debug("[proxy=%s] reused stream was dead; retrying", route.proxy_key)
            stream.abort()
            replayable = False  # once
            continue
        except Exception as exc:
            stream.abort()
            if not _network_failure(exc):
                raise
            logger.debug("[proxy=%s] h2 stream %d failed: %r", route.proxy_key, stream_id, exc)
            box = v.inputs.get(stream_id)
            if box is None or box.status or box.reset or not v.usable:
                v.reset(stream_id)
                return
            # Nothing was answered yet: a page says what happened, as the HTTP vhost does.
            try:
                await send_page(v, stream_id, 502, host, "the connection to the app was reset")
            except ConnectionResetError:
                v.reset(stream_id)  # the visitor's stream went away meanwhile
            return
        except BaseException:
            stream.abort()
            raise
        if keep and v.pool is not None:
            v.pool.put(route, stream)
        else:
            stream.close()
        return


async def _exchange_on(
    v: H2Visitor,
    stream_id: int,
    route: HTTPRoute,
    host: str,
    stream: ByteStream,
    head: bytes,
    framing: Framing,
    head_only: bool,
    *,
    stale_ok: bool,
) -> bool:
    """One exchange on `stream`; True if the stream can carry another request.

    With `stale_ok` (a reused stream, a request that may be repeated), a failure before any
    response byte raises _StaleStream instead of answering the visitor."""
    try:
        await stream.write(head)
    except (ConnectionError, OSError):
        if stale_ok:
            raise _StaleStream() from None
        raise
    if framing is Framing.NONE:  # no body: no pump task (most requests)
        return await _relay_response(v, stream_id, route, stream, host, head_only, stale_ok)
    async with asyncio.TaskGroup() as group:
        group.create_task(_send_body(v, stream_id, stream, framing))
        keep = await _relay_response(v, stream_id, route, stream, host, head_only, False)
    return keep


async def _send_body(v: H2Visitor, stream_id: int, stream: ByteStream, framing: Framing) -> None:
    box: StreamInput = v.inputs[stream_id]
    loop = asyncio.get_running_loop()
    while True:
        if box.items:
            data, length = box.items.pop(0)
            if data:
                await stream.write(
                    b"%x\r\n%b\r\n" % (len(data), data) if framing is Framing.CHUNKED else data
                )
                box.bytes_in += len(data)
            v.acknowledge(stream_id, length)
            continue
        if box.reset or v.lost:
            raise ConnectionResetError("the visitor reset the stream")
        if box.ended:
            if framing is Framing.CHUNKED:
                await stream.write(b"0\r\n\r\n")
            return
        box.waiter = loop.create_future()
        try:
            await box.waiter
        finally:
            box.waiter = None


async def _read_head(stream: ByteStream, response: _Response, stale_ok: bool) -> None:
    """Read until the final response head; _StaleStream if a reused stream is dead."""
    got_bytes = False
    while not response.head_done:
        try:
            data = await stream.read(READ_CHUNK_BYTES)
        except (ConnectionError, OSError):
            if stale_ok and not got_bytes:
                raise _StaleStream() from None
            raise
        if not data:
            if stale_ok and not got_bytes:
                raise _StaleStream()
            raise ConnectionResetError("the app closed before its response")
        got_bytes = True
        response.parser.feed_data(data)


async def _relay_response(
    v: H2Visitor,
    stream_id: int,
    route: HTTPRoute,
    stream: ByteStream,
    host: str,
    head_only: bool,
    stale_ok: bool,
) -> bool:
    """Relay the app's response; True if the upstream stream is clean for another request."""
    response = _Response()
    parser = response.parser
    try:
        async with asyncio.timeout(v.timeout_s):
            await _read_head(stream, response, stale_ok)
    except TimeoutError:
        await send_page(v, stream_id, 504, host, "the app did not answer in time")
        return False
    except httptools.HttpParserError as exc:
        await send_page(v, stream_id, 502, host, f"the app's response is not HTTP: {exc}")
        return False
    out = [(b":status", str(response.status).encode("ascii"))]
    rules = route.rules
    for name, value in response.headers:
        lname = name.lower()
        if lname in _HOP_BY_HOP or lname in rules.response_set_names:
            continue
        out.append((lname, value))
    out += [(name.lower(), value) for name, value in rules.response_set]
    end_now = head_only or (response.done and not response.body)
    v.send_head(stream_id, out, end_stream=end_now)
    if end_now:
        # After HEAD, httptools would take the next bytes as the announced body: no reuse.
        return not head_only and response.keep_alive and not response.extra
    while True:
        pieces, response.body = response.body, []
        for piece in pieces:
            await send_data(v, stream_id, piece)
        if response.done:
            break
        async with asyncio.timeout(v.timeout_s):  # each read, as the HTTP vhost's
            data = await stream.read(READ_CHUNK_BYTES)
        if not data:
            try:
                parser.feed_data(b"")  # until-close bodies end here
            except httptools.HttpParserError:
                raise ConnectionResetError("the app's response was cut short") from None
            response.done = True
            continue
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            if not response.done:
                raise ConnectionResetError("the app's response body is malformed") from None
            response.extra = True  # garbage after a complete response: relay it, do not reuse
    v.end(stream_id)
    return response.keep_alive and not response.extra


async def send_data(v: H2Visitor, stream_id: int, data: bytes) -> None:
    """Send body bytes within the stream's and the connection's windows."""
    view = memoryview(data)
    while view:
        if v.lost:
            raise ConnectionResetError("the visitor is gone")
        await v.drain()
        window = v.window(stream_id)
        if window <= 0:
            await v.wait_window()
            continue
        v.send_body(stream_id, bytes(view[:window]))
        view = view[window:]


async def send_page(
    v: H2Visitor,
    stream_id: int,
    status: int,
    host: str | None,
    detail: str | None,
    *extra: tuple[bytes, bytes],
    note: str | None = None,
    body: bytes | None = None,
) -> None:
    """An error page as a whole h2 response (`body` replaces the built-in page)."""
    body = render_page(status, host, detail, note) if body is None else body
    headers = [
        (b":status", str(status).encode("ascii")),
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        *extra,
    ]
    v.send_head(stream_id, headers)
    await send_data(v, stream_id, body)
    v.end(stream_id)
