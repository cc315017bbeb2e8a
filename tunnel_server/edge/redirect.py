"""`redirectHTTP`: the 308 a plain-HTTP visitor gets when the proxy is served over HTTPS.

308 (RFC 9110 section 15.4.9) keeps the method and body, so a webhook POSTed to http:// is
re-sent as a POST to https://. The Location is built from the *normalized* Host (lowercase,
no port), which must be a plain DNS name: a wildcard route matches any label, so the
visitor's bytes are checked before they go into a header.
"""

from __future__ import annotations

import re
from typing import Final

_SAFE_HOST: Final = re.compile(r"[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?")
_SAFE_TARGET: Final = re.compile(rb"/[\x21-\x7e]*")


def redirect_response(
    host: str, https_port: int, target: bytes, *, keep_alive: bool, head_only: bool
) -> bytes | None:
    """The whole 308 response, or None when host or target is not safe to echo."""
    if not _SAFE_HOST.fullmatch(host) or not _SAFE_TARGET.fullmatch(target):
        return None
    suffix = "" if https_port == 443 else f":{https_port}"
    location = f"https://{host}{suffix}".encode("ascii") + target
    body = b"" if head_only else b"Moved to " + location + b"\n"
    return b"".join(
        (
            b"HTTP/1.1 308 Permanent Redirect\r\nLocation: ",
            location,
            b"\r\nContent-Type: text/plain\r\nContent-Length: ",
            str(len(b"Moved to " + location + b"\n")).encode("ascii"),
            b"\r\nConnection: ",
            b"keep-alive" if keep_alive else b"close",
            b"\r\n\r\n",
            body,
        )
    )
