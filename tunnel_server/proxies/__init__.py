"""The server's proxy registry: one module per proxy type, one entry per ProxyType."""

from __future__ import annotations

from typing import Final

from protocol.proxytype import ProxyType

from .base import ProxyFactory
from .http import HTTPProxy, HTTPSProxy
from .secret import STCPProxy, SUDPProxy
from .tcp import TCPProxy
from .tcpmux import TCPMuxProxy
from .udp import UDPProxy
from .xtcp import XTCPProxy

SERVER_PROXIES: Final[dict[ProxyType, ProxyFactory]] = {
    ProxyType.TCP: TCPProxy,
    ProxyType.UDP: UDPProxy,
    ProxyType.HTTP: HTTPProxy,
    ProxyType.HTTPS: HTTPSProxy,
    ProxyType.TCPMUX: TCPMuxProxy,
    ProxyType.STCP: STCPProxy,
    ProxyType.SUDP: SUDPProxy,
    ProxyType.XTCP: XTCPProxy,
}
