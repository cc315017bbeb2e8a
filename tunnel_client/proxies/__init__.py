"""The client's proxy registry: one module per proxy type, one entry per ProxyType."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from protocol.proxytype import ProxyType

from ..config import ProxyConfig
from ..inspect.store import CaptureStore
from .base import ClientProxy
from .http import HTTPProxy
from .sudp import SUDPProxy
from .tcp import TCPProxy
from .udp import UDPProxy
from .xtcp import XTCPProxy

# Each factory takes the proxy's config and the inspector's store (None when it is off).
ProxyFactory = Callable[[ProxyConfig, CaptureStore | None], ClientProxy]

CLIENT_PROXIES: Final[dict[ProxyType, ProxyFactory]] = {
    ProxyType.TCP: TCPProxy,
    ProxyType.UDP: UDPProxy,
    ProxyType.HTTP: HTTPProxy,
    ProxyType.HTTPS: TCPProxy,  # TLS passes through untouched: a plain splice
    ProxyType.TCPMUX: TCPProxy,  # after the server's CONNECT, a plain splice too
    ProxyType.STCP: TCPProxy,  # the server joins a visitor's stream: a plain splice here
    ProxyType.SUDP: SUDPProxy,
    ProxyType.XTCP: XTCPProxy,  # relayed streams as stcp, plus the P2P rendezvous
}
