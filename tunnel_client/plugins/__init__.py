"""The client plugins: one module per plugin, one entry per frp plugin type.

A plugin takes the place of the local service of a tcp, http or https proxy (see
`tunnel_client.proxies.tcp`). Each factory gets the plugin's config and the proxy's type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from protocol.proxytype import ProxyType

from .base import ClientPlugin, server_tls_context
from .config import PluginConfig
from .http_proxy import HTTPProxyPlugin
from .reverse import Capture, ReverseProxyPlugin
from .socks5 import SOCKS5Plugin
from .static_file import StaticFilePlugin
from .tls2raw import TLSToRawPlugin
from .unix_socket import UnixSocketPlugin

PluginFactory = Callable[[PluginConfig, ProxyType, Capture | None], ClientPlugin]
# The plugins whose exchanges the inspector shows (they speak HTTP to the local service).
CAPTURED_PLUGINS: Final = frozenset({"http2http", "http2https", "https2http", "https2https"})


def _reverse(tls_in: bool, tls_out: bool) -> PluginFactory:
    def make(config: PluginConfig, proxy_type: ProxyType, capture: Capture | None) -> ClientPlugin:
        return ReverseProxyPlugin(
            config,
            tls_in=server_tls_context(config.crt_path, config.key_path) if tls_in else None,
            tls_out=tls_out,
            add_forwarded=proxy_type != ProxyType.HTTP,  # the http vhost sets them itself
            capture=capture,
        )

    return make


CLIENT_PLUGINS: Final[dict[str, PluginFactory]] = {
    "unix_domain_socket": lambda config, _, __: UnixSocketPlugin(config),
    "http_proxy": lambda config, _, __: HTTPProxyPlugin(config),
    "socks5": lambda config, _, __: SOCKS5Plugin(config),
    "static_file": lambda config, _, __: StaticFilePlugin(config),
    "http2http": _reverse(tls_in=False, tls_out=False),
    "http2https": _reverse(tls_in=False, tls_out=True),
    "https2http": _reverse(tls_in=True, tls_out=False),
    "https2https": _reverse(tls_in=True, tls_out=True),
    "tls2raw": lambda config, _, __: TLSToRawPlugin(
        config, server_tls_context(config.crt_path, config.key_path)
    ),
}


def make_plugin(
    config: PluginConfig, proxy_type: ProxyType, capture: Capture | None = None
) -> ClientPlugin:
    """The plugin for `config`; `capture` (the inspector's store, the proxy's name) lets the
    HTTP forwarding plugins show their exchanges in the inspector."""
    return CLIENT_PLUGINS[config.type](config, proxy_type, capture)


__all__ = ["CAPTURED_PLUGINS", "CLIENT_PLUGINS", "ClientPlugin", "PluginConfig", "make_plugin"]
