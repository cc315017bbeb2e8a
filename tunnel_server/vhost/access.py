"""What the HTTP vhost reports per request: the access record and the stats callback."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

OnRequest = Callable[[str, int, int], None]  # (proxy_name, bytes_in, bytes_out)


class RequestRecord(NamedTuple):
    """One request relayed to a proxy, for the access log and the latency histograms. (A
    named tuple: one is made per request, and a frozen dataclass costs several times more.)"""

    proxy: str
    peer: tuple[str, int]
    method: str
    host: str
    path: str  # without the query string, which may carry secrets
    status: int  # 0 if no response head came back
    seconds: float  # from the request head to the end of the response
    bytes_in: int  # towards the app
    bytes_out: int  # back to the visitor


OnAccess = Callable[[RequestRecord], None]
