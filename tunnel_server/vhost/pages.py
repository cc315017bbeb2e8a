"""The small HTML error pages the vhost answers with when it cannot proxy a request.

Each page says which host was asked for and what happened, in words a visitor can act on.
The host comes from the visitor and the detail from the server, so both are escaped and cut
short; nothing secret (tokens, passwords, client ids) ever reaches these functions.
"""

from __future__ import annotations

from typing import Final

MAX_HOST_CHARS: Final = 253
MAX_DETAIL_CHARS: Final = 300
MAX_NOTE_CHARS: Final = 400

REASONS: Final[dict[int, str]] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_EXPLANATIONS: Final[dict[int, str]] = {
    400: "The request could not be understood.",
    401: "This tunnel needs a user name and password.",
    403: "Your address may not use this tunnel.",
    404: "No tunnel is serving this host.",
    405: "This method is not supported by the tunnel server.",
    408: "The request headers did not arrive in time.",
    431: "The request headers are too large.",
    500: "The tunnel server failed while handling the request.",
    502: "The tunnel is registered, but its client or local service could not be reached.",
    503: "The tunnel server is at its connection limit. Try again shortly.",
    504: "The local service behind the tunnel did not answer in time.",
}

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;"
    "color:#222}h1{font-size:1.5em}code{background:#eee;padding:0 .2em}"
    "footer{color:#777;font-size:.85em;margin-top:2em}"
)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render_page(
    status: int, host: str | None, detail: str | None = None, note: str | None = None
) -> bytes:
    """The HTML body of an error page; `note` is the tunnel's own word (say, what happens
    while its client is offline)."""
    import html  # its entity tables (0.5 MiB) load with the first error page, not at start

    reason = REASONS.get(status, "Error")
    title = f"{status} {reason}"
    lines = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p>{html.escape(_EXPLANATIONS.get(status, reason))}</p>",
    ]
    if host:
        lines.append(f"<p>Host: <code>{html.escape(_clip(host, MAX_HOST_CHARS))}</code></p>")
    if detail:
        lines.append(f"<p>{html.escape(_clip(detail, MAX_DETAIL_CHARS))}</p>")
    if note:
        lines.append(f"<p>{html.escape(_clip(note, MAX_NOTE_CHARS))}</p>")
    lines.append("<footer>tunnelkit</footer></body></html>\n")
    return "\n".join(lines).encode("utf-8")


def error_response(
    status: int,
    host: str | None,
    detail: str | None = None,
    *,
    keep_alive: bool = False,
    body: bytes | None = None,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    head_only: bool = False,
    note: str | None = None,
) -> bytes:
    """A complete HTTP/1.1 response carrying an error page (or `body`, e.g. custom404Page).

    `head_only` leaves the body out (the answer to a HEAD request) but keeps its length.
    """
    content = body if body is not None else render_page(status, host, detail, note)
    parts = [
        b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Error").encode("ascii")),
        b"Content-Type: text/html; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(content),
        b"Cache-Control: no-store\r\n",
        b"X-Content-Type-Options: nosniff\r\n",
    ]
    for name, value in extra_headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    if not head_only:
        parts.append(content)
    return b"".join(parts)
