"""The client plugins: one module per plugin, one entry per frp plugin type.

A plugin takes the place of the local service of a tcp, http or https proxy (see
`tunnel_client.proxies.tcp`). Each factory gets the plugin's config and the proxy's type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from protocol.proxytype import ProxyType

from .base import ClientPlugin, server_tls_context
from .config import PluginConfig

if TYPE_CHECKING:
    from .reverse import Capture

# Each plugin's module (aiohttp for the HTTP ones, h11 for http_proxy) is imported when a
# proxy uses it: a client without plugins never loads them (tests/unit/test_lazy_imports.py).
PluginFactory = Callable[[PluginConfig, ProxyType, "Capture | None"], ClientPlugin]
# The plugins whose exchanges the inspector shows (they speak HTTP to the local service).
CAPTURED_PLUGINS: Final = frozenset({"http2http", "http2https", "https2http", "https2https"})


def _reverse(tls_in: bool, tls_out: bool) -> PluginFactory:
    def make(config: PluginConfig, proxy_type: ProxyType, capture: Capture | None) -> ClientPlugin:
        from .reverse import ReverseProxyPlugin

        return ReverseProxyPlugin(
            config,
            tls_in=server_tls_context(config.crt_path, config.key_path) if tls_in else None,
            tls_out=tls_out,
            add_forwarded=proxy_type != ProxyType.HTTP,  # the http vhost sets them itself
            capture=capture,
        )

    return make


def _unix_socket(config: PluginConfig, _: ProxyType, __: Capture | None) -> ClientPlugin:
    from .unix_socket import UnixSocketPlugin

    return UnixSocketPlugin(config)


def _http_proxy(config: PluginConfig, _: ProxyType, __: Capture | None) -> ClientPlugin:
    from .http_proxy import HTTPProxyPlugin

    return HTTPProxyPlugin(config)


def _socks5(config: PluginConfig, _: ProxyType, __: Capture | None) -> ClientPlugin:
    from .socks5 import SOCKS5Plugin

    return SOCKS5Plugin(config)


def _static_file(config: PluginConfig, _: ProxyType, __: Capture | None) -> ClientPlugin:
    from .static_file import StaticFilePlugin

    return StaticFilePlugin(config)


def _tls2raw(config: PluginConfig, _: ProxyType, __: Capture | None) -> ClientPlugin:
    from .tls2raw import TLSToRawPlugin

    return TLSToRawPlugin(config, server_tls_context(config.crt_path, config.key_path))


CLIENT_PLUGINS: Final[dict[str, PluginFactory]] = {
    "unix_domain_socket": _unix_socket,
    "http_proxy": _http_proxy,
    "socks5": _socks5,
    "static_file": _static_file,
    "http2http": _reverse(tls_in=False, tls_out=False),
    "http2https": _reverse(tls_in=False, tls_out=True),
    "https2http": _reverse(tls_in=True, tls_out=False),
    "https2https": _reverse(tls_in=True, tls_out=True),
    "tls2raw": _tls2raw,
}


def make_plugin(
    config: PluginConfig, proxy_type: ProxyType, capture: Capture | None = None
) -> ClientPlugin:
    """The plugin for `config`; `capture` (the inspector's store, the proxy's name) lets the
    HTTP forwarding plugins show their exchanges in the inspector."""
    return CLIENT_PLUGINS[config.type](config, proxy_type, capture)


__all__ = ["CAPTURED_PLUGINS", "CLIENT_PLUGINS", "ClientPlugin", "PluginConfig", "make_plugin"]
