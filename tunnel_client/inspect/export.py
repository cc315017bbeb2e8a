"""Export captured exchanges: a curl command, HAR 1.2, and raw HTTP/1.1 messages.

Pure functions. URLs are made absolute from the request's Host header and its
X-Forwarded-Proto (set by tunneld), so a HAR or a curl command points at the public address
the provider used. Bodies are exported as kept: a truncated body is exported truncated and
says so (a HAR `comment`, a curl comment line). Binary bodies are base64 in HAR (with
`encoding` on responses, `_encoding` on requests, as HAR allows custom `_` fields) and piped
through `base64 -d` in curl.
"""

from __future__ import annotations

import base64
import datetime
import shlex
from collections.abc import Iterable
from typing import Final

from protocol import __version__
from tunnel_client.inspect.compare import query_params
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange, Headers, header_value

# Framing headers describe the wire, not the message: curl and HAR readers set their own.
FRAMING_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "connection"})


def absolute_url(exchange: CapturedExchange) -> str:
    """The public URL the request was sent to."""
    if exchange.path.startswith(("http://", "https://")):
        return exchange.path  # absolute-form target (a proxy request)
    host = header_value(exchange.request_headers, "host") or exchange.proxy
    proto = (header_value(exchange.request_headers, "x-forwarded-proto") or "http").lower()
    scheme = "https" if proto.split(",")[0].strip() == "https" else "http"
    return f"{scheme}://{host}{exchange.path}"


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _truncation_note(label: str, body: CapturedBody) -> str | None:
    if not body.truncated:
        return None
    return f"{label} body truncated: {len(body.data)} of {body.size} bytes kept"


# ---- curl ----------------------------------------------------------------------------------


def as_curl(exchange: CapturedExchange) -> str:
    """A shell command that sends the request again with curl."""
    args = ["curl", "-X", exchange.method, absolute_url(exchange)]
    for name, value in exchange.request_headers:
        if name.lower() not in FRAMING_HEADERS:
            args += ["-H", f"{name}: {value}"]
    body = exchange.request_body
    prefix = ""
    if body.data:
        text = _text(body.data)
        if text is not None:
            args += ["--data-binary", text]
        else:
            encoded = base64.b64encode(body.data).decode("ascii")
            prefix = f"printf %s {encoded} | base64 -d | "
            args += ["--data-binary", "@-"]
    command = prefix + " ".join(shlex.quote(arg) for arg in args)
    note = _truncation_note("request", body)
    return f"# {note}\n{command}" if note else command


# ---- HAR 1.2 -------------------------------------------------------------------------------


def _har_headers(headers: Headers) -> list[dict[str, object]]:
    return [{"name": name, "value": value} for name, value in headers]


def _har_cookies(headers: Headers, name: str) -> list[dict[str, object]]:
    cookies: list[dict[str, object]] = []
    for key, value in headers:
        if key.lower() != name:
            continue
        if name == "cookie":
            for part in value.split(";"):
                cookie, sep, cookie_value = part.strip().partition("=")
                if sep and cookie:
                    cookies.append({"name": cookie, "value": cookie_value})
        else:  # set-cookie: name=value; attributes
            first = value.split(";", 1)[0]
            cookie, sep, cookie_value = first.strip().partition("=")
            if sep and cookie:
                cookies.append({"name": cookie, "value": cookie_value})
    return cookies


def _http_version(version: str) -> str:
    return f"HTTP/{version}" if version else "HTTP/1.1"


def _comment(*notes: str | None) -> dict[str, object]:
    kept = [note for note in notes if note]
    return {"comment": "; ".join(kept)} if kept else {}


def har_entry(exchange: CapturedExchange) -> dict[str, object]:
    """One HAR 1.2 `entry`."""
    started = datetime.datetime.fromtimestamp(exchange.started_at, tz=datetime.UTC)
    mime = header_value(exchange.request_headers, "content-type") or ""
    request: dict[str, object] = {
        "method": exchange.method,
        "url": absolute_url(exchange),
        "httpVersion": _http_version(exchange.http_version),
        "cookies": _har_cookies(exchange.request_headers, "cookie"),
        "headers": _har_headers(exchange.request_headers),
        "queryString": [{"name": k, "value": v} for k, v in query_params(exchange.path)],
        "headersSize": -1,
        "bodySize": exchange.request_body.size,
        **_comment(_truncation_note("request", exchange.request_body)),
    }
    if exchange.request_body.data or exchange.request_body.size:
        text = _text(exchange.request_body.data)
        post: dict[str, object] = {"mimeType": mime}
        if text is not None:
            post["text"] = text
        else:
            post["text"] = base64.b64encode(exchange.request_body.data).decode("ascii")
            post["_encoding"] = "base64"
        request["postData"] = post
    body = exchange.response_body
    content: dict[str, object] = {
        "size": body.size,
        "mimeType": header_value(exchange.response_headers, "content-type") or "",
    }
    if body.data:
        text = _text(body.data)
        if text is not None:
            content["text"] = text
        else:
            content["text"] = base64.b64encode(body.data).decode("ascii")
            content["encoding"] = "base64"
    duration = exchange.duration_ms if exchange.duration_ms is not None else 0.0
    response: dict[str, object] = {
        # HAR uses status 0 for "no response" (as browsers do for aborted requests).
        "status": exchange.status or 0,
        "statusText": exchange.reason if exchange.status else (exchange.error or ""),
        "httpVersion": _http_version(exchange.response_http_version),
        "cookies": _har_cookies(exchange.response_headers, "set-cookie"),
        "headers": _har_headers(exchange.response_headers),
        "content": content,
        "redirectURL": header_value(exchange.response_headers, "location") or "",
        "headersSize": -1,
        "bodySize": body.size if exchange.status else -1,
        **_comment(_truncation_note("response", body)),
    }
    notes = [f"tunnelkit proxy {exchange.proxy}, request #{exchange.id}"]
    if exchange.replay:
        notes.append(f"replay of #{exchange.replay_of}")
    if exchange.late:
        notes.append("delivered late (captured by tunneld while the client was offline)")
    return {
        "startedDateTime": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "time": duration,
        "request": request,
        "response": response,
        "cache": {},
        # The capture sees the request leave and the answer come back as one span.
        "timings": {"send": 0, "wait": duration, "receive": 0},
        "comment": "; ".join(notes),
    }


def as_har(exchanges: Iterable[CapturedExchange]) -> dict[str, object]:
    """A HAR 1.2 document holding `exchanges`, oldest first."""
    ordered = sorted(exchanges, key=lambda e: e.id)
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "tunnelkit", "version": __version__},
            "entries": [har_entry(exchange) for exchange in ordered],
        }
    }


# ---- raw HTTP/1.1 --------------------------------------------------------------------------


def _raw_message(start_line: str, headers: Headers, body: CapturedBody) -> bytes:
    lines = [start_line]
    for name, value in headers:
        if name.lower() not in ("content-length", "transfer-encoding"):
            lines.append(f"{name}: {value}")
    # The capture keeps bodies de-chunked: frame what is shown with its real length.
    if body.data or body.size:
        lines.append(f"Content-Length: {len(body.data)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1") + body.data


def raw_request(exchange: CapturedExchange) -> bytes:
    """The request as HTTP/1.1 bytes (the kept body, de-chunked)."""
    start = f"{exchange.method} {exchange.path} {_http_version(exchange.http_version)}"
    return _raw_message(start, exchange.request_headers, exchange.request_body)


def raw_response(exchange: CapturedExchange) -> bytes | None:
    """The response as HTTP/1.1 bytes, or None if none came."""
    if exchange.status is None:
        return None
    start = f"{_http_version(exchange.response_http_version)} {exchange.status} {exchange.reason}"
    return _raw_message(start.rstrip(), exchange.response_headers, exchange.response_body)
