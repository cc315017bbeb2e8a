"""The client's proxy registry: one module per proxy type, one entry per ProxyType."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from protocol.proxytype import ProxyType

from ..config import ProxyConfig
from .base import ClientProxy
from .tcp import TCPProxy
from .udp import UDPProxy

CLIENT_PROXIES: Final[dict[ProxyType, Callable[[ProxyConfig], ClientProxy]]] = {
    ProxyType.TCP: TCPProxy,
    ProxyType.UDP: UDPProxy,
}
