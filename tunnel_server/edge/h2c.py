"""`backendProtocol = "h2c"`: keep HTTP/2 end to end (gRPC), with the `h2` package on both legs.

For an h2 visitor's stream on such a route, the tunnel stream carries a fresh cleartext HTTP/2
connection (prior knowledge, RFC 9113 section 3.3) to the local service, with one stream on
it. Headers, body and trailers (which gRPC needs for its status) are copied frame by frame,
with the route's header rules applied as the HTTP vhost applies them (`h2stream.py` has
already routed the request and checked basic auth):

    visitor HEADERS -> backend HEADERS        backend HEADERS  -> visitor HEADERS
    visitor DATA    -> backend DATA           backend DATA     -> visitor DATA
    visitor END     -> backend END            backend trailers -> visitor trailers + END

Flow control on both legs: visitor bytes are credited back only once the backend accepted
them (its window), backend bytes only once the visitor's window took them; so each leg
buffers at most one window. A reset on either side resets the other.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from ..vhost.rewrite import HeaderRules, added_headers, forwarded_headers
from ..vhost.upstream import ByteStream
from .h2conn import H2Visitor, StreamInput

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 64 * 1024
BACKEND_STREAM: Final = 1  # the one stream on the backend connection
# Connection-specific request headers are not forwarded; `te: trailers` is (gRPC sends it).
_DROP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"}
)


class _Backend:
    """The client side of the h2c connection inside one tunnel stream."""

    def __init__(self, stream: ByteStream, rules: HeaderRules) -> None:
        self.stream = stream
        self.rules = rules
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.window_open = asyncio.Event()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.write(data)


def backend_request_headers(
    headers: list[tuple[bytes, bytes]], rules: HeaderRules, authority: bytes, peer_ip: bytes
) -> list[tuple[bytes, bytes]]:
    """The request's headers for the backend, with the route's rules applied as the HTTP vhost
    applies them (rewrite.py): hostHeaderRewrite on :authority, the visitor's X-Forwarded-*,
    Forwarded and X-Real-IP replaced by ours, Authorization dropped when the route has basic
    auth, then requestHeaders.set. Connection-specific headers are not forwarded; `te:
    trailers` is (gRPC sends it). Names are lowercase, as HTTP/2 requires."""
    pseudo: list[tuple[bytes, bytes]] = []
    regular: list[tuple[bytes, bytes]] = []
    te: list[tuple[bytes, bytes]] = []  # hop-by-hop in HTTP/1.1, so kept apart from the filter
    for name, value in headers:
        if name.startswith(b":"):
            if name == b":scheme":
                value = b"http"
            elif name == b":authority":
                value = rules.host_rewrite or authority
            pseudo.append((name, value))
        elif name == b"te":
            if value == b"trailers":
                te.append((name, value))
        elif name not in _DROP:
            regular.append((name, value))
    kept, forwarded_for = forwarded_headers(regular, rules)
    added = added_headers(rules, authority, peer_ip, b"https", forwarded_for)
    return pseudo + te + kept + [(name.lower(), value) for name, value in added]


def backend_response_headers(headers: Any, rules: HeaderRules | None) -> list[tuple[bytes, bytes]]:
    """A response's (or, with rules None, trailers') headers for the visitor:
    responseHeaders.set replaces the backend's values on the response head."""
    drop = _DROP | rules.response_set_names if rules is not None else _DROP
    out = [(name, value) for name, value in headers or () if name.lower() not in drop]
    if rules is not None:
        out += [(name.lower(), value) for name, value in rules.response_set]
    return out


async def h2c_exchange(
    v: H2Visitor,
    stream_id: int,
    stream: ByteStream,
    headers: list[tuple[bytes, bytes]],
    authority: bytes,
    rules: HeaderRules,
) -> None:
    """Relay one visitor stream over the tunnel stream as h2c; raises ConnectionError."""
    backend = _Backend(stream, rules)
    backend.conn.initiate_connection()
    out = backend_request_headers(headers, rules, authority, v.peer[0].encode("ascii"))
    box = v.inputs[stream_id]
    backend.conn.send_headers(BACKEND_STREAM, out, end_stream=box.ended and not box.items)
    await backend.flush()
    async with asyncio.TaskGroup() as group:
        pump = group.create_task(_visitor_to_backend(v, stream_id, backend, box))
        await _backend_to_visitor(v, stream_id, backend)
        pump.cancel()  # the response is complete: whatever the visitor still sends is moot


async def _visitor_to_backend(
    v: H2Visitor, stream_id: int, backend: _Backend, box: StreamInput
) -> None:
    conn = backend.conn
    loop = asyncio.get_running_loop()
    if box.ended and not box.items:
        return  # the request had no body: END_STREAM went with the headers
    while True:
        if box.items:
            data, length = box.items[0]
            view = memoryview(data)
            while view:
                window = min(
                    conn.local_flow_control_window(BACKEND_STREAM), conn.max_outbound_frame_size
                )
                if window <= 0:
                    backend.window_open.clear()
                    await backend.window_open.wait()
                    continue
                conn.send_data(BACKEND_STREAM, bytes(view[:window]))
                view = view[window:]
                await backend.flush()
            box.items.pop(0)
            v.acknowledge(stream_id, length)
            continue
        if box.reset or v.lost:
            raise ConnectionResetError("the visitor reset the stream")
        if box.ended:
            conn.end_stream(BACKEND_STREAM)
            await backend.flush()
            return
        box.waiter = loop.create_future()
        try:
            await box.waiter
        finally:
            box.waiter = None


async def _backend_to_visitor(v: H2Visitor, stream_id: int, backend: _Backend) -> None:
    from .h2stream import send_data  # h2stream imports this module

    conn = backend.conn
    while True:
        data = await backend.stream.read(READ_CHUNK_BYTES)
        if not data:
            raise ConnectionResetError("the local service closed the h2c connection")
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            raise ConnectionResetError(f"the local service broke HTTP/2: {exc}") from None
        for event in events:
            if await _backend_event(v, stream_id, backend, event, send_data):
                await backend.flush()
                return
        await backend.flush()


async def _backend_event(
    v: H2Visitor, stream_id: int, backend: _Backend, event: Any, send_data: Any
) -> bool:
    """Handle one backend event; True once the exchange is over."""
    if isinstance(event, h2.events.ResponseReceived):
        # A "trailers-only" answer (a gRPC error) is one HEADERS frame with END_STREAM.
        ended = event.stream_ended is not None
        out = backend_response_headers(event.headers, backend.rules)
        v.send_head(stream_id, out, end_stream=ended)
        return ended
    elif isinstance(event, h2.events.DataReceived) and event.stream_id == BACKEND_STREAM:
        await send_data(v, stream_id, event.data or b"")
        backend.conn.acknowledge_received_data(event.flow_controlled_length or 0, BACKEND_STREAM)
    elif isinstance(event, h2.events.TrailersReceived):
        v.send_head(stream_id, backend_response_headers(event.headers, None), end_stream=True)
        return True
    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == BACKEND_STREAM:
        v.end(stream_id)
        return True
    elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
        raise ConnectionResetError("the local service reset the stream")
    elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
        backend.window_open.set()
    return False
