"""`[proxies.plugin]`: frp's client plugins, their keys and the rules between them.

A plugin replaces the local service of a tcp, http or https proxy: instead of dialling
localIP:localPort, the client hands each user connection to the plugin. Which keys each
plugin accepts, and which it needs, are two tables (`PLUGIN_KEYS`, `REQUIRED_KEYS`); each
key is declared once, as a row of the proxy field table (`PLUGIN_FIELDS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from protocol.errors import ConfigError
from protocol.proxytype import ProxyType
from tunnel_common.configfields import Field
from tunnel_common.configfile import (
    ConfigTable,
    PathStr,
    Secret,
    SecretStr,
    Spec,
    Str,
    StrMap,
    describe,
    join_key,
)

_HOST_PORT: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_STRIP_PREFIX: Final = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")

_HTTP_FORWARD: Final = ("localAddr", "hostHeaderRewrite", "requestHeaders")
_TLS_FILES: Final = ("crtPath", "keyPath")

# The keys each plugin accepts, besides `type`.
PLUGIN_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "unix_domain_socket": ("unixPath",),
    "http_proxy": ("httpUser", "httpPassword"),
    "socks5": ("username", "password"),
    "static_file": ("localPath", "stripPrefix", "httpUser", "httpPassword"),
    "http2http": _HTTP_FORWARD,
    "http2https": _HTTP_FORWARD,
    "https2http": (*_HTTP_FORWARD, *_TLS_FILES),
    "https2https": (*_HTTP_FORWARD, *_TLS_FILES),
    "tls2raw": ("localAddr", *_TLS_FILES),
}

REQUIRED_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "unix_domain_socket": ("unixPath",),
    "static_file": ("localPath",),
    "http2http": ("localAddr",),
    "http2https": ("localAddr",),
    "https2http": ("localAddr",),
    "https2https": ("localAddr",),
    "tls2raw": ("localAddr",),
}

# frp runs every plugin on any proxy that carries streams; tunnelkit has these of them.
PLUGIN_PROXY_TYPES: Final = (ProxyType.TCP, ProxyType.HTTP, ProxyType.HTTPS)


def _users(key: str) -> str:
    return ", ".join(name for name, keys in PLUGIN_KEYS.items() if key in keys)


_PLUGIN_SPECS: Final[dict[str, tuple[Spec, str]]] = {
    "unixPath": (PathStr(), "Unix socket to connect to"),
    "httpUser": (Str(), "basic-auth user"),
    "httpPassword": (SecretStr(), "basic-auth password"),
    "username": (Str(), "SOCKS5 user"),
    "password": (SecretStr(), "SOCKS5 password"),
    "localPath": (PathStr(), "directory to serve"),
    "stripPrefix": (Str(allow_empty=True), "URL prefix the files are served under"),
    "localAddr": (Str(), '"host:port" of the local service'),
    "hostHeaderRewrite": (Str(), "Host header sent to the local service"),
    "requestHeaders.set": (StrMap(), "headers set on each request"),
    "crtPath": (PathStr(), "certificate served to visitors (default: self-signed)"),
    "keyPath": (PathStr(), "its private key"),
}

# `[proxies.plugin]` rows of the proxy field table. They are checked and documented there;
# `complete_plugin` builds the `PluginConfig`, because which keys apply depends on `type`.
PLUGIN_FIELDS: Final = (
    Field("plugin.type", None, Str(), None, "plugin: " + ", ".join(PLUGIN_KEYS)),
    *(
        Field(f"plugin.{key}", None, spec, None, f"{help_text} ({_users(key.split('.')[0])})")
        for key, (spec, help_text) in _PLUGIN_SPECS.items()
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginConfig:
    """One `[proxies.plugin]` table. Keys a plugin does not use stay at their defaults."""

    type: str
    unix_path: Path | None = None
    http_user: str | None = None
    http_password: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    local_path: Path | None = None
    strip_prefix: str = ""
    local_addr: tuple[str, int] | None = None
    host_header_rewrite: str | None = None
    request_headers_set: dict[str, str] = field(default_factory=dict)
    crt_path: Path | None = None
    key_path: Path | None = None

    def describe_target(self) -> str:
        """Where the plugin sends traffic, for status pages ("plugin http2http -> host:80")."""
        if self.local_addr is not None:
            return f"plugin {self.type} -> {self.local_addr[0]}:{self.local_addr[1]}"
        if self.unix_path is not None:
            return f"plugin {self.type} -> unix:{self.unix_path}"
        if self.local_path is not None:
            return f"plugin {self.type} -> {self.local_path}"
        return f"plugin {self.type}"


def complete_plugin(table: ConfigTable, proxy_type: ProxyType) -> PluginConfig:
    """Check a `[proxies.plugin]` table against its plugin's keys and build its config."""
    kind = table.get("type", str)
    if kind is None:
        raise table.error("type", "is required: set it to one of " + ", ".join(PLUGIN_KEYS))
    if kind == "virtual_net":
        raise table.error("type", '"virtual_net" is not supported yet (an frp plugin); remove it')
    if kind not in PLUGIN_KEYS:
        allowed = ", ".join(f'"{name}"' for name in PLUGIN_KEYS)
        raise table.error("type", f"must be one of {allowed}, got {describe(kind)}")
    if proxy_type not in PLUGIN_PROXY_TYPES:
        raise table.error(
            "", f"plugins run on tcp, http and https proxies, and this one is {proxy_type}"
        )
    allowed_keys = PLUGIN_KEYS[kind]
    for key in table:
        if key != "type" and key not in allowed_keys:
            raise table.error(
                key, f"is not a key of the {kind} plugin (it takes {', '.join(allowed_keys)})"
            )
    for key in REQUIRED_KEYS.get(kind, ()):
        if key not in table:
            raise table.error(key, f"is required by the {kind} plugin")
    config = PluginConfig(
        type=kind,
        unix_path=table.get("unixPath", Path),
        http_user=table.get("httpUser", str),
        http_password=table.get("httpPassword", Secret),
        username=table.get("username", str),
        password=table.get("password", Secret),
        local_path=table.get("localPath", Path),
        strip_prefix=table.get_or("stripPrefix", str, "").strip("/"),
        local_addr=_host_port(table),
        host_header_rewrite=table.get("hostHeaderRewrite", str),
        request_headers_set=table.table("requestHeaders").str_map("set"),
        crt_path=table.get("crtPath", Path),
        key_path=table.get("keyPath", Path),
    )
    _check_pairs(table, config)
    return config


def _host_port(table: ConfigTable) -> tuple[str, int] | None:
    text = table.get("localAddr", str)
    if text is None:
        return None
    match = _HOST_PORT.fullmatch(text)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise table.error("localAddr", f'must be "host:port", got {describe(text)}')
    return match.group(1).strip("[]"), int(match.group(2))


def _check_pairs(table: ConfigTable, config: PluginConfig) -> None:
    for user_key, secret_key, user, secret in (
        ("httpUser", "httpPassword", config.http_user, config.http_password),
        ("username", "password", config.username, config.password),
    ):
        if (user is None) != (secret is None):
            missing = secret_key if secret is None else user_key
            other = user_key if secret is None else secret_key
            raise table.error(missing, f"is required when {other} is set")
    if (config.crt_path is None) != (config.key_path is None):
        missing = "keyPath" if config.key_path is None else "crtPath"
        raise table.error(missing, "is required when the other of crtPath/keyPath is set")
    if not _STRIP_PREFIX.fullmatch(config.strip_prefix):
        raise table.error("stripPrefix", f"must be a URL path, got {describe(config.strip_prefix)}")
    for name, value in config.request_headers_set.items():
        key = join_key(table.key_path("requestHeaders") + ".set", name)
        if not _HEADER_NAME.fullmatch(name):
            reason = f"is not a valid HTTP header name: {describe(name)}"
            raise ConfigError(table.source, key, reason)
        if re.search(r"[\x00-\x1f\x7f]", value.replace("\t", "")):
            reason = "must not contain line breaks or control characters"
            raise ConfigError(table.source, key, reason)
