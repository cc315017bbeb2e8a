"""The records the inspector keeps: one `CapturedExchange` per HTTP request/response pair.

A captured exchange keeps each message's head as the raw bytes the capture saw
(`request_head`, `response_head`, each at most capture.MAX_HEAD_BYTES) and parses them
(`parse_head`) the first time its target, reason or headers are read: when the exchange is
shown, filtered, replayed, exported or written to history. Under load most exchanges are
evicted from the store before anyone looks, so most heads are never parsed or decoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import httptools

Headers = tuple[tuple[str, str], ...]


class CapturedBody(NamedTuple):
    """A message body, kept up to the store's byte limit. (A named tuple: two are made per
    captured exchange, and a tuple is the cheapest immutable record.)"""

    data: bytes = b""
    size: int = 0  # bytes seen on the wire after de-chunking, including any not kept
    truncated: bool = False

    @classmethod
    def limited(cls, data: bytes, size: int, limit: int) -> CapturedBody:
        """Keep at most `limit` bytes of `data`, remembering the full `size`."""
        return cls(data=data[:limit], size=size, truncated=size > limit)


_EMPTY_BODY = CapturedBody()


class ParsedHead(NamedTuple):
    """A head parsed for display: the request target (or the reason phrase), the headers
    (latin-1, so replay can restore the exact bytes), and why parsing failed, if it did."""

    target: str
    headers: Headers
    error: str | None


class _HeadCollector:
    """httptools callbacks that keep the target or reason and every header."""

    def __init__(self) -> None:
        self.target = b""
        self.raw: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_status(self, status: bytes) -> None:
        self.target += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw += (name, value)


def parse_head(head: bytes, *, request: bool) -> ParsedHead:
    """Parse a raw message head (start line and headers, up to its blank line)."""
    import httptools  # loaded with the first capture; history and replay may come first

    if not head:
        return ParsedHead("", (), None)
    collector = _HeadCollector()
    parser: httptools.HttpRequestParser | httptools.HttpResponseParser = (
        httptools.HttpRequestParser(collector)
        if request
        else httptools.HttpResponseParser(collector)
    )
    error: str | None = None
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # the head itself is whole: an Upgrade or CONNECT
    except httptools.HttpParserError as exc:
        kind = "request" if request else "response"
        error = f"the {kind} head is not parseable as HTTP/1.x ({type(exc).__name__}: {exc})"
    raw = iter(collector.raw)
    headers = tuple(
        [(n.decode("latin-1"), v.decode("latin-1")) for n, v in zip(raw, raw, strict=False)]
    )
    target = collector.target.decode("latin-1")
    if error is not None and request and not target:
        parts = head.split(b" ", 2)  # best effort, for a list that shows something
        target = parts[1].decode("latin-1") if len(parts) > 1 else ""
    return ParsedHead(target, headers, error)


class CapturedExchange:
    """One request and (once it arrives) its response.

    The capture that created it fills in the response fields later; readers treat a ``None``
    status as "no response yet" and read `error` for why one never came. `path`,
    `request_headers`, `reason` and `response_headers` are given, or parsed from the raw
    heads on first read (and may be set, e.g. by a replay).
    """

    __slots__ = (
        "_path",
        "_reason",
        "_request_headers",
        "_response_headers",
        "duration_ms",
        "error",
        "http_version",
        "id",
        "late",
        "method",
        "mocked",
        "proxy",
        "replay",
        "replay_of",
        "request_body",
        "request_head",
        "request_head_error",
        "response_body",
        "response_head",
        "response_head_error",
        "response_http_version",
        "started_at",
        "status",
    )

    def __init__(
        self,
        id: int,
        proxy: str,
        started_at: float,  # epoch seconds when the first request byte arrived
        method: str,
        path: str | None = None,  # the raw request target; None: from request_head
        http_version: str = "",
        request_headers: Headers | None = None,  # None: from request_head
        request_body: CapturedBody = _EMPTY_BODY,
        status: int | None = None,
        reason: str | None = None,  # None: from response_head
        response_http_version: str = "",
        response_headers: Headers | None = None,  # None: from response_head
        response_body: CapturedBody = _EMPTY_BODY,
        duration_ms: float | None = None,
        replay: bool = False,
        replay_of: int | None = None,
        error: str | None = None,
        late: bool = False,  # captured by tunneld while this client was offline
        mocked: str | None = None,  # answered by a mock/catch rule, not the local service
        *,
        request_head: bytes = b"",
        response_head: bytes = b"",
    ) -> None:
        self.id = id
        self.proxy = proxy
        self.started_at = started_at
        self.method = method
        self._path = path
        self.http_version = http_version
        self._request_headers = request_headers
        self.request_body = request_body
        self.status = status
        self._reason = reason
        self.response_http_version = response_http_version
        self._response_headers = response_headers
        self.response_body = response_body
        self.duration_ms = duration_ms
        self.replay = replay
        self.replay_of = replay_of
        self.error = error
        self.late = late
        self.mocked = mocked
        self.request_head = request_head
        self.response_head = response_head
        self.request_head_error: str | None = None  # set when request_head did not parse
        self.response_head_error: str | None = None

    def _parse_request(self) -> None:
        if not self.request_head:
            return  # nothing yet: read as empty, parse when a head arrives
        parsed = parse_head(self.request_head, request=True)
        if self._path is None:
            self._path = parsed.target
        if self._request_headers is None:
            self._request_headers = parsed.headers
        self.request_head_error = parsed.error

    def _parse_response(self) -> None:
        if not self.response_head:
            return  # no response yet: read as empty, parse when it arrives
        parsed = parse_head(self.response_head, request=False)
        if self._reason is None:
            self._reason = parsed.target
        if self._response_headers is None:
            self._response_headers = parsed.headers
        self.response_head_error = parsed.error

    @property
    def path(self) -> str:
        if self._path is None:
            self._parse_request()
        return self._path or ""

    @path.setter
    def path(self, value: str) -> None:
        self._path = value

    @property
    def request_headers(self) -> Headers:
        if self._request_headers is None:
            self._parse_request()
        return self._request_headers or ()

    @request_headers.setter
    def request_headers(self, value: Headers) -> None:
        self._request_headers = value

    @property
    def reason(self) -> str:
        if self._reason is None:
            self._parse_response()
        return self._reason or ""

    @reason.setter
    def reason(self, value: str) -> None:
        self._reason = value

    @property
    def response_headers(self) -> Headers:
        if self._response_headers is None:
            self._parse_response()
        return self._response_headers or ()

    @response_headers.setter
    def response_headers(self, value: Headers) -> None:
        self._response_headers = value

    @property
    def parsed(self) -> bool:
        """True once both heads were parsed (or given): for tests of the lazy path."""
        return self._request_headers is not None and self._response_headers is not None

    def _fields(self) -> tuple[object, ...]:
        return (
            self.id,
            self.proxy,
            self.started_at,
            self.method,
            self.path,
            self.http_version,
            self.request_headers,
            self.request_body,
            self.status,
            self.reason,
            self.response_http_version,
            self.response_headers,
            self.response_body,
            self.duration_ms,
            self.replay,
            self.replay_of,
            self.error,
            self.late,
            self.mocked,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CapturedExchange):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (
            f"CapturedExchange(id={self.id!r}, proxy={self.proxy!r}, method={self.method!r}, "
            f"path={self.path!r}, status={self.status!r}, error={self.error!r})"
        )


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """Return the first value of header `name` (case-insensitive), or None."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None
