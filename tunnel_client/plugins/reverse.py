"""`http2http`, `http2https`, `https2http`, `https2https`: an HTTP reverse proxy to
`localAddr`, optionally terminating TLS from the visitor (https2*) and optionally speaking
TLS to the local service (*2https).

Requests and responses stream through aiohttp in RELAY_CHUNK_BYTES pieces, never buffered
whole. `hostHeaderRewrite` and `requestHeaders.set` apply to each request. As frp does, the
upstream certificate of a *2https plugin is not verified: it is the operator's own local
service, usually with a self-signed certificate. Upgrades (WebSocket) are not forwarded.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import StreamReader, web
from multidict import CIMultiDict

from protocol.aio.stream import MuxStream

from ..inspect.store import CaptureStore
from .base import RELAY_CHUNK_BYTES, Splice, logger
from .capture import ExchangeCapture
from .config import PluginConfig
from .webhost import WebHost, visitor

UPSTREAM_CONNECT_TIMEOUT_S: Final = 10.0
UPSTREAM_POOL_SIZE: Final = 100  # open connections to localAddr, shared by all visitors
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


Capture = tuple[CaptureStore, str]  # the inspector's store and the proxy's name


async def _teed(content: StreamReader, tap: ExchangeCapture) -> AsyncIterator[bytes]:
    """The request body for the upstream, with a copy to the inspector."""
    async for chunk in content.iter_chunked(RELAY_CHUNK_BYTES):
        tap.request_body(chunk)
        yield chunk
    tap.request_end()


class ReverseProxyPlugin:
    """One of the four HTTP forwarding plugins; `tls_in`/`tls_out` say which."""

    def __init__(
        self,
        config: PluginConfig,
        *,
        tls_in: ssl.SSLContext | None,
        tls_out: bool,
        add_forwarded: bool,
        capture: Capture | None = None,
    ) -> None:
        assert config.local_addr is not None  # required by the config rules
        host, port = config.local_addr
        host = f"[{host}]" if ":" in host else host
        self.base = f"{'https' if tls_out else 'http'}://{host}:{port}"
        self.config = config
        self.tls_out = tls_out
        self.add_forwarded = add_forwarded  # the server's http vhost did not set X-Forwarded-*
        self.forwarded_proto = "https" if tls_in is not None else "http"
        self.capture = capture  # (the inspector's store, the proxy's name), when it is on
        self._session: aiohttp.ClientSession | None = None
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.host = WebHost(app, tls_in)

    async def serve(self, stream: MuxStream, splice: Splice) -> None:
        await self.host.serve(stream, splice)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=UPSTREAM_POOL_SIZE, ssl=False),
                timeout=aiohttp.ClientTimeout(total=None, connect=UPSTREAM_CONNECT_TIMEOUT_S),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                auto_decompress=False,
            )
        return self._session

    def _request_headers(self, request: web.Request) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP
        )
        if self.config.host_header_rewrite is not None:
            headers["Host"] = self.config.host_header_rewrite
        if self.add_forwarded:
            addr = visitor(request)
            if addr:
                prior = headers.get("X-Forwarded-For")
                headers["X-Forwarded-For"] = f"{prior}, {addr}" if prior else addr
            headers.setdefault("X-Forwarded-Proto", self.forwarded_proto)
            headers.setdefault("X-Forwarded-Host", request.headers.get("Host", ""))
        for name, value in self.config.request_headers_set.items():
            headers[name] = value
        return headers

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        url = self.base + str(request.rel_url)
        headers = self._request_headers(request)
        body: object = request.content if request.body_exists else None
        tap: ExchangeCapture | None = None
        if self.capture is not None:
            tap = ExchangeCapture(*self.capture)
            target = str(request.rel_url)
            host = headers.get("Host", request.host)
            tap.request(
                request.method, target, [("Host", host), *headers.items()], body is not None
            )
            if body is not None:
                body = _teed(request.content, tap)
            else:
                tap.request_end()
        response: web.StreamResponse | None = None
        try:
            async with self._client().request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        response.headers.add(name, value)
                if tap is not None:
                    tap.response(
                        upstream.status, upstream.reason or "", list(response.headers.items())
                    )
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(RELAY_CHUNK_BYTES):
                    await response.write(chunk)
                    if tap is not None:
                        tap.response_body(chunk)
                await response.write_eof()
                if tap is not None:
                    tap.response_end()
                    tap = None
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.info("tunnelc: plugin: %s %s failed: %s", request.method, url, exc)
            if response is not None and response.prepared:
                # Too late for an error page: cut the connection so the visitor sees it broke.
                if request.transport is not None:
                    request.transport.close()
                return response
            return web.Response(status=502, text=f"cannot reach {self.base}: {exc}\n")
        finally:
            if tap is not None:
                tap.abandon()  # an error or a cancellation: publish what was seen

    def close(self) -> None:
        self.host.close()

    async def wait_closed(self) -> None:
        await self.host.wait_closed()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.sleep(0)  # let aiohttp's connector finish closing its transports
