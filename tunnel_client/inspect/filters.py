"""Filters over captured exchanges, shared by `/api/requests`, `/api/events` and the page.

A filter comes from query parameters, each optional, all of them ANDed:

``path``    substring of the request target (case-sensitive, as paths are)
``method``  one method or a comma list (``POST,PUT``), case-insensitive
``status``  a comma list of codes (``404``), classes (``5xx``) or ``error`` (no response)
``proxy``   the proxy name, exact
``q``       text anywhere: the target, header names and values, and the kept bodies
            (case-insensitive; bodies are searched as latin-1 so any byte matches itself)

Bad values are a `ValueError` naming the parameter, which the app answers with 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tunnel_client.inspect.exchange import CapturedExchange

FILTER_KEYS: Final = ("path", "method", "status", "proxy", "q")
MAX_FILTER_CHARS: Final = 512  # per parameter; longer is refused
_STATUS_ITEM: Final = re.compile(r"([1-5])(?:xx|XX)|([1-5]\d\d)|error")
_METHOD: Final = re.compile(r"[A-Za-z]{1,20}")


@dataclass(frozen=True, slots=True)
class ExchangeFilter:
    """A parsed filter; `matches` is the predicate. The empty filter matches everything."""

    path: str = ""
    methods: frozenset[str] = frozenset()
    status_classes: frozenset[int] = frozenset()  # 5 for 5xx
    statuses: frozenset[int] = frozenset()
    status_error: bool = False
    proxy: str = ""
    text: str = ""

    @property
    def empty(self) -> bool:
        return self == ExchangeFilter()

    def matches(self, exchange: CapturedExchange) -> bool:
        if self.path and self.path not in exchange.path:
            return False
        if self.methods and exchange.method.upper() not in self.methods:
            return False
        if self.proxy and exchange.proxy != self.proxy:
            return False
        if (self.statuses or self.status_classes or self.status_error) and not self._status_ok(
            exchange.status
        ):
            return False
        return not self.text or self._text_in(exchange)

    def _status_ok(self, status: int | None) -> bool:
        if status is None:
            return self.status_error
        return status in self.statuses or status // 100 in self.status_classes

    def _text_in(self, exchange: CapturedExchange) -> bool:
        needle = self.text
        if needle in exchange.path.lower():
            return True
        for headers in (exchange.request_headers, exchange.response_headers):
            for name, value in headers:
                if needle in name.lower() or needle in value.lower():
                    return True
        for body in (exchange.request_body, exchange.response_body):
            if body.data and needle in body.data.decode("latin-1").lower():
                return True
        return needle in (exchange.error or "").lower()


def parse_filter(params: Mapping[str, str]) -> ExchangeFilter:
    """Build a filter from query parameters; raises ValueError naming a bad one."""
    for key in FILTER_KEYS:
        if len(params.get(key, "")) > MAX_FILTER_CHARS:
            raise ValueError(f"filter {key!r} is longer than {MAX_FILTER_CHARS} characters")
    methods: set[str] = set()
    for item in _items(params.get("method", "")):
        if not _METHOD.fullmatch(item):
            raise ValueError(f"filter 'method': {item!r} is not an HTTP method")
        methods.add(item.upper())
    statuses: set[int] = set()
    classes: set[int] = set()
    error = False
    for item in _items(params.get("status", "")):
        match = _STATUS_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                f"filter 'status': {item!r} is not a code (404), a class (5xx) or 'error'"
            )
        if match[1]:
            classes.add(int(match[1]))
        elif match[2]:
            statuses.add(int(match[2]))
        else:
            error = True
    return ExchangeFilter(
        path=params.get("path", "").strip(),
        methods=frozenset(methods),
        status_classes=frozenset(classes),
        statuses=frozenset(statuses),
        status_error=error,
        proxy=params.get("proxy", "").strip(),
        text=params.get("q", "").strip().lower(),
    )


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
