"""Replay a captured request (optionally edited) straight to the proxy's local service.

`replay_request_from` turns a captured exchange plus the user's edits into a validated
`ReplayRequest`; `make_local_replayer` sends it with aiohttp and returns a `ReplayResult`.
The inspector app records every result in the store as a new exchange with ``replay=True``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange, Headers

logger = logging.getLogger(__name__)

REPLAY_TIMEOUT: Final = 30.0  # seconds for the whole replay, connect to last body byte
DEFAULT_REPLAY_BODY_BYTES: Final = 1024 * 1024  # response bytes kept; the rest is counted
MAX_REPLAY_READ_BYTES: Final = 64 * 1024 * 1024  # stop reading a response after this much
READ_CHUNK_BYTES: Final = 64 * 1024
MAX_REPLAY_HEADERS: Final = 256
MAX_PATH_CHARS: Final = 8192
# Hop-by-hop headers describe the original connection, not the request; aiohttp frames the
# replayed body itself.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    }
)
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_PATH: Final = re.compile(r"/[\x21-\x7e\x80-\xff]*")
_BAD_VALUE: Final = re.compile(r"[\r\n\x00]")
_OVERRIDE_KEYS: Final = frozenset({"method", "path", "headers", "body", "body_base64"})


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A request to send to the local service of `proxy`."""

    proxy: str
    method: str
    path: str
    headers: Headers
    body: bytes
    replay_of: int | None = None  # the captured exchange this was made from


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What the local service answered."""

    status: int
    reason: str
    http_version: str
    headers: Headers
    body: CapturedBody
    duration_ms: float


class ReplayError(Exception):
    """The replay could not be sent or answered; the message is one line for the user."""


Replayer = Callable[[ReplayRequest], Awaitable[ReplayResult]]
Resolver = Callable[[str], tuple[str, int] | None]


def _parse_headers(value: object) -> Headers:
    if isinstance(value, Mapping):
        pairs: list[object] = [[key, item] for key, item in value.items()]
    elif isinstance(value, list):
        pairs = value
    else:
        raise ValueError("headers must be a list of [name, value] pairs or an object")
    if len(pairs) > MAX_REPLAY_HEADERS:
        raise ValueError(f"at most {MAX_REPLAY_HEADERS} headers can be replayed")
    headers: list[tuple[str, str]] = []
    for pair in pairs:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise ValueError("each header must be a [name, value] pair")
        name, item = pair
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP token")
        if not isinstance(item, str) or _BAD_VALUE.search(item):
            raise ValueError(f"header {name!r} must be a string without line breaks")
        headers.append((name, item.strip()))
    return tuple(headers)


def _parse_body(overrides: Mapping[str, object], original: CapturedExchange) -> bytes:
    if "body" in overrides and "body_base64" in overrides:
        raise ValueError("give either body or body_base64, not both")
    if "body" in overrides:
        body = overrides["body"]
        if not isinstance(body, str):
            raise ValueError("body must be a string")
        return body.encode("utf-8")
    if "body_base64" in overrides:
        encoded = overrides["body_base64"]
        if not isinstance(encoded, str):
            raise ValueError("body_base64 must be a string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("body_base64 is not valid base64") from None
    captured = original.request_body
    if captured.truncated:
        raise ValueError(
            f"the captured body was cut at {len(captured.data)} of {captured.size} bytes, so it "
            "cannot be replayed as is; replay with an edited body instead"
        )
    return captured.data


def replay_request_from(
    exchange: CapturedExchange, overrides: Mapping[str, object] | None = None
) -> ReplayRequest:
    """Build the request to replay from `exchange` and the user's edits.

    Raises ValueError with a one-line message when an edit is invalid.
    """
    edits = overrides or {}
    unknown = sorted(set(edits) - _OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"unknown replay field {unknown[0]!r}; use {sorted(_OVERRIDE_KEYS)}")
    method = edits.get("method", exchange.method)
    if not isinstance(method, str) or not _TOKEN.fullmatch(method.strip()):
        raise ValueError(f"method {method!r} is not a valid HTTP method")
    path = edits.get("path", exchange.path)
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS or not _PATH.fullmatch(path):
        raise ValueError("path must start with '/' and contain no spaces or control characters")
    headers = _parse_headers(edits["headers"]) if "headers" in edits else exchange.request_headers
    return ReplayRequest(
        proxy=exchange.proxy,
        method=method.strip().upper(),
        path=path,
        headers=headers,
        body=_parse_body(edits, exchange),
        replay_of=exchange.id,
    )


def _version_text(version: aiohttp.HttpVersion | None) -> str:
    return "" if version is None else f"{version.major}.{version.minor}"


def _origin(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_local_replayer(
    resolve: Resolver,
    *,
    max_body_bytes: int = DEFAULT_REPLAY_BODY_BYTES,
    timeout: float = REPLAY_TIMEOUT,
) -> Replayer:
    """Return a replayer that sends requests to ``resolve(proxy)`` = (local host, port)."""

    async def replay(request: ReplayRequest) -> ReplayResult:
        target = resolve(request.proxy)
        if target is None:
            raise ReplayError(f"proxy {request.proxy!r} is not configured here; cannot replay")
        host, port = target
        url = URL(_origin(host, port) + request.path, encoded=True)
        headers = CIMultiDict(
            (name, value) for name, value in request.headers if name.lower() not in HOP_BY_HOP
        )
        # Send what was captured, not aiohttp's defaults, unless the request had them.
        skip = [name for name in ("User-Agent", "Accept", "Accept-Encoding") if name not in headers]
        if "Content-Type" not in headers:
            skip.append("Content-Type")
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(
                        connector=connector, auto_decompress=False, skip_auto_headers=skip
                    ) as session,
                    session.request(
                        request.method,
                        url,
                        headers=headers,
                        data=request.body if request.body else None,
                        allow_redirects=False,
                    ) as response,
                ):
                    kept = bytearray()
                    size = 0
                    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                        size += len(chunk)
                        room = max_body_bytes - len(kept)
                        if room > 0:
                            kept += chunk[:room]
                        if size >= MAX_REPLAY_READ_BYTES:
                            break  # the rest is not read; force_close drops the connection
                    result = ReplayResult(
                        status=response.status,
                        reason=response.reason or "",
                        http_version=_version_text(response.version),
                        headers=tuple(
                            (name.decode("latin-1"), value.decode("latin-1"))
                            for name, value in response.raw_headers
                        ),
                        body=CapturedBody.limited(bytes(kept), size, max_body_bytes),
                        duration_ms=round((time.monotonic() - started) * 1000.0, 3),
                    )
        except TimeoutError:
            raise ReplayError(
                f"the local service at {host}:{port} did not answer within {timeout:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ReplayError(
                f"cannot reach the local service at {host}:{port}: {str(exc) or type(exc).__name__}"
            ) from None
        logger.info(
            "[proxy=%s] replayed %s %s -> %d",
            request.proxy,
            request.method,
            request.path,
            result.status,
        )
        return result

    return replay
