"""HTTP and HTTPS virtual hosts: shared listeners that route visitors to proxies by name.

The server registers one `HTTPRoute` per proxy in a `VhostRouter` (one router per listener)
and removes it by proxy key when the proxy or its client goes away. Routes carry an `Opener`
that opens a stream to the client; see `upstream.py`.
"""

from .http_proxy import HTTPVhostServer
from .https_sni import HTTPSVhostServer
from .routing import HTTPRoute, RouteConflict, RouteError, RouteOwned, RouteRefused, VhostRouter
from .upstream import ByteStream, Opener, StreamsByteStream, UpstreamError, tcp_opener

__all__ = [
    "ByteStream",
    "HTTPRoute",
    "HTTPSVhostServer",
    "HTTPVhostServer",
    "Opener",
    "RouteConflict",
    "RouteError",
    "RouteOwned",
    "RouteRefused",
    "StreamsByteStream",
    "UpstreamError",
    "VhostRouter",
    "tcp_opener",
]
