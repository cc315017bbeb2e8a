"""Mock and catch: answer an http proxy's requests from a rule, without the local service.

A rule matches a proxy, a method (or any) and a path (exact, or a prefix ending in ``*``;
the query is ignored). ``mock`` answers with the rule's status, headers and body; ``catch``
records the request and answers ``200`` with an empty body. Rules are made and toggled from
the inspector page (or its API), for example to answer 500 and watch a provider retry.

How a request meets the rules (`serve_with_rules`, used by the http proxy while its proxy has
an enabled rule): the client accepts the stream, reads the request head, and either answers it
here (reading the body first) or dials the local service, writes the head it read and splices
the rest. Both ways the connection is marked ``Connection: close``, so every request reaches
the client on a stream of its own and is matched on its own. The inspector's tap sees the
bytes both ways, so mocked exchanges are captured like any other, labelled with the rule.

Bounds: `MAX_MOCK_RULES` rules; request heads to `MAX_HEAD_BYTES`; a mocked request's body to
`MAX_MOCK_REQUEST_BYTES` (larger: the stream is reset); `MOCK_READ_TIMEOUT_S` to read it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, Literal

from protocol.aio.connection import MuxSession
from protocol.aio.splice import SpliceProtocol, dial_failure
from protocol.aio.stream import MuxStream, StreamResetError
from protocol.errors import ErrorCode

logger = logging.getLogger(__name__)

MAX_MOCK_RULES: Final = 64
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_MOCK_REQUEST_BYTES: Final = 16 * 1024 * 1024
MAX_MOCK_BODY_BYTES: Final = 1024 * 1024  # a rule's response body
MOCK_READ_TIMEOUT_S: Final = 30.0
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_BAD_VALUE: Final = re.compile(r"[\r\n\x00]")
_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "connection"})
_RULE_KEYS: Final = frozenset(
    {"proxy", "method", "path", "action", "status", "headers", "body", "enabled"}
)

Action = Literal["mock", "catch"]


@dataclass(slots=True)
class MockRule:
    """One rule; `enabled` is what the page toggles."""

    id: int
    proxy: str
    method: str  # "*" = any
    path: str  # exact path, or a prefix ending in "*"
    action: Action = "mock"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    enabled: bool = True
    hits: int = 0

    def matches(self, proxy: str, method: str, target: str) -> bool:
        if not self.enabled or proxy != self.proxy:
            return False
        if self.method != "*" and method.upper() != self.method:
            return False
        path = target.split("?", 1)[0]
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "proxy": self.proxy,
            "method": self.method,
            "path": self.path,
            "action": self.action,
            "status": self.status,
            "headers": [list(pair) for pair in self.headers],
            "body": self.body,
            "enabled": self.enabled,
            "hits": self.hits,
        }

    def response(self) -> bytes:
        """The HTTP/1.1 response this rule answers with."""
        status = 200 if self.action == "catch" else self.status
        body = b"" if self.action == "catch" else self.body.encode("utf-8")
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Mocked"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() not in _FRAMING]
        lines += [
            f"Content-Length: {len(body)}",
            "Connection: close",
            "X-Tunnelkit-Mock: " + str(self.id),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_rule(rule_id: int, data: object, proxies: frozenset[str]) -> MockRule:
    """Build a rule from the API's JSON; raises ValueError with a one-line reason."""
    if not isinstance(data, dict):
        raise ValueError("a rule must be a JSON object")
    unknown = sorted(
        set(data) - {"proxy", "method", "path", "action", "status", "headers", "body", "enabled"}
    )
    if unknown:
        raise ValueError(f"unknown rule field {unknown[0]!r}")
    proxy = data.get("proxy")
    if not isinstance(proxy, str) or proxy not in proxies:
        raise ValueError(f"proxy must be one of the http proxies: {', '.join(sorted(proxies))}")
    method = data.get("method", "*")
    if not isinstance(method, str) or not (method == "*" or _TOKEN.fullmatch(method)):
        raise ValueError("method must be an HTTP method or *")
    path = data.get("path")
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or _BAD_VALUE.search(path)
        or " " in path
    ):
        raise ValueError("path must start with / (end it with * to match a prefix)")
    action = data.get("action", "mock")
    if action not in ("mock", "catch"):
        raise ValueError('action must be "mock" or "catch"')
    status = data.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ValueError("status must be a number from 200 to 599")
    raw_headers = data.get("headers", [])
    if not isinstance(raw_headers, list) or len(raw_headers) > 64:
        raise ValueError("headers must be a list of at most 64 [name, value] pairs")
    headers: list[tuple[str, str]] = []
    for pair in raw_headers:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise ValueError("each header must be a [name, value] pair of strings")
        name, value = pair
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError(f"header {name!r} is not a valid name/value")
        headers.append((name, value))
    body = data.get("body", "")
    if not isinstance(body, str) or len(body.encode()) > MAX_MOCK_BODY_BYTES:
        raise ValueError(f"body must be a string of at most {MAX_MOCK_BODY_BYTES} bytes")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError("enabled must be true or false")
    chosen: Action = "catch" if action == "catch" else "mock"
    return MockRule(
        rule_id, proxy, method.upper(), path, chosen, status, tuple(headers), body, enabled
    )


@dataclass(slots=True)
class MockRules:
    """The rules of one tunnelc (bounded by `MAX_MOCK_RULES`). With inspector history on,
    `history.HistoryWriter` saves them whenever `version` moved (not on hits)."""

    rules: dict[int, MockRule] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    version: int = 0  # bumped by every add, toggle and delete
    # Called with a proxy's name when its rules change (one listener per HTTP proxy).
    listeners: list[Callable[[str], None]] = field(default_factory=list)

    def changed(self, proxy: str) -> None:
        """Tell the proxies: the tunnel's idle kept-alive streams must not skip the new rules."""
        for listener in list(self.listeners):
            listener(proxy)

    def new_id(self) -> int:
        return next(self._ids)

    def add(self, rule: MockRule) -> None:
        if len(self.rules) >= MAX_MOCK_RULES:
            raise ValueError(f"at most {MAX_MOCK_RULES} rules; delete one first")
        self.rules[rule.id] = rule
        self.version += 1
        self.changed(rule.proxy)

    def set_enabled(self, rule: MockRule, enabled: bool) -> None:
        rule.enabled = enabled
        self.version += 1
        self.changed(rule.proxy)

    def remove(self, rule_id: int) -> None:
        rule = self.rules.pop(rule_id, None)
        if rule is not None:
            self.version += 1
            self.changed(rule.proxy)

    def saved(self) -> list[tuple[int, dict[str, object]]]:
        """(id, rule) of each rule as history keeps it (without its hits)."""
        kept = []
        for rule in self.rules.values():
            data = rule.as_json()
            del data["id"], data["hits"]
            kept.append((rule.id, data))
        return kept

    def restore(self, saved: list[tuple[int, object]]) -> int:
        """Take back saved rules (at start, before any rule is made); returns how many.
        A rule this version cannot read is skipped with a warning."""
        for rule_id, data in saved[:MAX_MOCK_RULES]:
            proxy = data.get("proxy") if isinstance(data, dict) else None
            try:
                rule = parse_rule(
                    rule_id, data, frozenset([proxy] if isinstance(proxy, str) else [])
                )
            except ValueError as exc:
                logger.warning("tunnelc: saved mock rule #%d skipped: %s", rule_id, exc)
                continue
            self.rules[rule_id] = rule
        self._ids = itertools.count(max(self.rules, default=0) + 1)
        return len(self.rules)

    def active(self, proxy: str) -> bool:
        return any(rule.enabled and rule.proxy == proxy for rule in self.rules.values())

    def match(self, proxy: str, method: str, target: str) -> MockRule | None:
        for rule in self.rules.values():
            if rule.matches(proxy, method, target):
                return rule
        return None


class _Head:
    """httptools callbacks for one request: the head, then whether the body is complete."""

    def __init__(self) -> None:
        self.url = b""
        self.head_done = False
        self.complete = False
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"expect" and value.strip().lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_message_complete(self) -> None:
        self.complete = True


def _with_connection_close(data: bytes, head_end: int) -> bytes:
    """`data` with `Connection: close` added to its head, unless it names a Connection."""
    head = data[:head_end]
    if re.search(rb"\r\nconnection:", head, re.IGNORECASE):
        return data  # an Upgrade, say: leave it be
    line_end = head.index(b"\r\n")
    return data[:line_end] + b"\r\nConnection: close" + data[line_end:]


async def serve_with_rules(
    session: MuxSession,
    stream: MuxStream,
    rules: MockRules,
    proxy: str,
    local: tuple[str, int],
    dial_timeout_s: float,
    on_label: Callable[[str], None],
) -> None:
    """Answer one stream's request from a rule, or pass it to the local service."""
    import httptools  # here: a client whose rules never answer does not load it at start

    session.accept_stream(stream)
    head = _Head()
    parser = httptools.HttpRequestParser(head)
    received = b""
    try:
        async with asyncio.timeout(MOCK_READ_TIMEOUT_S):
            while not head.head_done:
                chunk = await stream.read()
                if not chunk:
                    stream.close()
                    return
                received += chunk
                if len(received) > MAX_HEAD_BYTES and not head.head_done:
                    raise ValueError(f"request head over {MAX_HEAD_BYTES} bytes")
                parser.feed_data(chunk)
            method = parser.get_method().decode("latin-1")
            target = head.url.decode("latin-1")
            rule = rules.match(proxy, method, target)
            if rule is None:
                await _forward(session, stream, received, local, dial_timeout_s)
                return
            rule.hits += 1
            on_label(f"{rule.action} rule #{rule.id}")
            if head.expect_continue and not head.complete:
                await stream.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            total = len(received)
            while not head.complete:
                chunk = await stream.read()
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_MOCK_REQUEST_BYTES:
                    raise ValueError(f"mocked request over {MAX_MOCK_REQUEST_BYTES} bytes")
                parser.feed_data(chunk)
    except (httptools.HttpParserError, ValueError) as exc:
        stream.abort(ErrorCode.PROTOCOL_ERROR, f"mock: {exc}")
        return
    except TimeoutError:
        stream.abort(ErrorCode.CANCELLED, "mock: the request did not arrive in time")
        return
    except (StreamResetError, BrokenPipeError):
        return  # the visitor went away (reset or closed): nothing to answer
    try:
        await stream.write(rule.response())
    except (StreamResetError, BrokenPipeError):
        return  # as above
    stream.close()


async def _forward(
    session: MuxSession,
    stream: MuxStream,
    received: bytes,
    local: tuple[str, int],
    dial_timeout_s: float,
) -> None:
    """Dial the local service, send what was read (marked Connection: close), then splice."""
    head_end = received.index(b"\r\n\r\n")
    first = _with_connection_close(received, head_end)
    host, port = local

    class _Primed(SpliceProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(first)  # type: ignore[attr-defined]
            super().connection_made(transport)

    try:
        async with asyncio.timeout(dial_timeout_s):
            await session.loop.create_connection(lambda: _Primed(stream), host, port)
    except (OSError, TimeoutError) as exc:
        reason = dial_failure(host, port, exc, dial_timeout_s)
        stream.abort(ErrorCode.DIAL_FAILED, reason)
