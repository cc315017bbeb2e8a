"""Diff two captured exchanges: request line, headers, query and bodies (JSON-aware).

Headers compare by name, case-insensitively (a repeated header compares as its values joined
with ", "). Bodies that both parse as JSON compare structurally: one change per JSON path
(``$.items[2].id``), so key order and whitespace never show up as differences. Other text
bodies get a unified diff; binary bodies compare by size and SHA-256.

Bounds: at most `MAX_DIFF_CHANGES` JSON changes and `MAX_DIFF_LINES` text-diff lines are
returned (the result says when it was cut); JSON nesting deeper than `MAX_JSON_DEPTH` compares
as whole values.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from tunnel_client.inspect.bodyview import body_text
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange, Headers

MAX_DIFF_CHANGES: Final = 500  # JSON paths reported per body
MAX_DIFF_LINES: Final = 2000  # unified-diff lines reported per body
MAX_JSON_DEPTH: Final = 64  # deeper values compare whole


@dataclass(slots=True)
class _Changes:
    items: list[dict[str, object]] = field(default_factory=list)
    cut: bool = False

    def add(self, path: str, change: str, a: object, b: object) -> None:
        if len(self.items) >= MAX_DIFF_CHANGES:
            self.cut = True
            return
        self.items.append({"path": path, "change": change, "a": a, "b": b})


def query_params(target: str) -> list[list[str]]:
    """The query parameters of a request target, in order, blanks kept."""
    return [[k, v] for k, v in parse_qsl(urlsplit(target).query, keep_blank_values=True)]


def _header_map(headers: Headers) -> dict[str, str]:
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.lower(), []).append(value)
    return {name: ", ".join(values) for name, values in merged.items()}


def diff_pairs(a: dict[str, str], b: dict[str, str]) -> list[dict[str, object]]:
    """Keys added, removed or changed between two maps, sorted by key."""
    out: list[dict[str, object]] = []
    for key in sorted(a.keys() | b.keys()):
        if key not in b:
            out.append({"name": key, "change": "removed", "a": a[key], "b": None})
        elif key not in a:
            out.append({"name": key, "change": "added", "a": None, "b": b[key]})
        elif a[key] != b[key]:
            out.append({"name": key, "change": "changed", "a": a[key], "b": b[key]})
    return out


def _json_diff(a: object, b: object, path: str, changes: _Changes, depth: int) -> None:
    if depth < MAX_JSON_DEPTH and isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys(), key=str):
            sub = f"{path}.{key}" if str(key).isidentifier() else f"{path}[{json.dumps(key)}]"
            if key not in b:
                changes.add(sub, "removed", a[key], None)
            elif key not in a:
                changes.add(sub, "added", None, b[key])
            else:
                _json_diff(a[key], b[key], sub, changes, depth + 1)
        return
    if depth < MAX_JSON_DEPTH and isinstance(a, list) and isinstance(b, list):
        for index in range(max(len(a), len(b))):
            sub = f"{path}[{index}]"
            if index >= len(b):
                changes.add(sub, "removed", a[index], None)
            elif index >= len(a):
                changes.add(sub, "added", None, b[index])
            else:
                _json_diff(a[index], b[index], sub, changes, depth + 1)
        return
    # bool is an int in Python: compare types too, so true and 1 differ.
    if type(a) is not type(b) or a != b:
        changes.add(path, "changed", a, b)


def _parse_json(text: str | None) -> tuple[bool, object]:
    if text is None:
        return False, None
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def diff_bodies(
    headers_a: Headers, a: CapturedBody, headers_b: Headers, b: CapturedBody
) -> dict[str, object]:
    """Compare two bodies: "same", or a JSON, text or binary diff."""
    if a.data == b.data and a.size == b.size:
        return {"kind": "same"}
    text_a, text_b = body_text(headers_a, a), body_text(headers_b, b)
    ok_a, json_a = _parse_json(text_a)
    ok_b, json_b = _parse_json(text_b)
    if ok_a and ok_b:
        changes = _Changes()
        _json_diff(json_a, json_b, "$", changes, 0)
        if not changes.items:
            return {"kind": "same-json"}  # only whitespace or key order differ
        return {"kind": "json", "changes": changes.items, "cut": changes.cut}
    if text_a is not None and text_b is not None:
        lines = list(
            difflib.unified_diff(
                text_a.splitlines(),
                text_b.splitlines(),
                fromfile="a",
                tofile="b",
                lineterm="",
            )
        )
        return {
            "kind": "text",
            "lines": lines[:MAX_DIFF_LINES],
            "cut": len(lines) > MAX_DIFF_LINES,
        }
    return {
        "kind": "binary",
        "a": {"size": a.size, "sha256": hashlib.sha256(a.data).hexdigest()},
        "b": {"size": b.size, "sha256": hashlib.sha256(b.data).hexdigest()},
    }


def diff_exchanges(a: CapturedExchange, b: CapturedExchange) -> dict[str, object]:
    """Everything that differs between two exchanges, for `/api/diff`."""
    line = {
        key: {"a": va, "b": vb}
        for key, va, vb in (
            ("method", a.method, b.method),
            ("path", urlsplit(a.path).path, urlsplit(b.path).path),
            ("status", a.status, b.status),
            ("proxy", a.proxy, b.proxy),
        )
        if va != vb
    }
    return {
        "a": a.id,
        "b": b.id,
        "line": line,
        "query": diff_pairs(dict(query_params(a.path)), dict(query_params(b.path))),
        "request_headers": diff_pairs(
            _header_map(a.request_headers), _header_map(b.request_headers)
        ),
        "response_headers": diff_pairs(
            _header_map(a.response_headers), _header_map(b.response_headers)
        ),
        "request_body": diff_bodies(
            a.request_headers, a.request_body, b.request_headers, b.request_body
        ),
        "response_body": diff_bodies(
            a.response_headers, a.response_body, b.response_headers, b.response_body
        ),
    }
