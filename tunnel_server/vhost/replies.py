"""Answers the vhost gives by itself, without the app: error pages and the redirect to HTTPS.

Each writes the whole answer to the visitor and says whether the connection goes on
(`Outcome.KEEP`, only when the request was read whole) or closes.
"""

from __future__ import annotations

from ..edge.redirect import redirect_response
from .exchange import Outcome
from .inbound import InboundProtocol
from .pages import error_response
from .request import END_OF_MESSAGE, EndOfMessage, RequestHead


def skip_body(conn: InboundProtocol) -> bool:
    """Drop the current request's queued body; True if its end was reached."""
    while True:
        item = conn.peek()
        if item is END_OF_MESSAGE or isinstance(item, EndOfMessage):
            conn.pop()
            return True
        if not isinstance(item, bytes):
            return False
        conn.pop()


def reply_error(
    conn: InboundProtocol,
    head: RequestHead,
    status: int,
    host: str | None,
    detail: str | None,
    *,
    body: bytes | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> Outcome:
    """Answer with an error page. After a 401 or 404 the connection is kept if the request
    was read whole; other refusals close it."""
    keep = status in (401, 404) and head.keep_alive and not head.switching and skip_body(conn)
    conn.write(
        error_response(
            status,
            host,
            detail,
            keep_alive=keep,
            body=body,
            extra_headers=extra,
            head_only=head.method == b"HEAD",
        )
    )
    return Outcome.KEEP if keep else Outcome.CLOSE


def redirect(
    conn: InboundProtocol, head: RequestHead, name: str, port: int, target: bytes
) -> Outcome:
    """redirectHTTP: a 308 to `https://name:port` + target (a 400 if they cannot make one)."""
    keep = head.keep_alive and not head.switching and skip_body(conn)
    answer = redirect_response(
        name, port, target, keep_alive=keep, head_only=head.method == b"HEAD"
    )
    if answer is None:
        return reply_error(conn, head, 400, None, "the Host or target cannot redirect")
    conn.write(answer)
    return Outcome.KEEP if keep else Outcome.CLOSE
