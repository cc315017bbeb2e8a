"""The frp plugin operations' JSON bodies for tunnelkit's sessions and proxies (plugins.py).

Each `*_content` builds frp's body for one operation; `apply_new_proxy` folds a plugin's
changed NewProxy content back into the request. `ping_loop` sends Ping for every session.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from protocol.messages import NewProxy

from .errors import ProxyRefused
from .plugins import PluginRejected, now_s, user_info
from .users.directory import drop_session

if TYPE_CHECKING:
    from .server import TunnelServer
    from .session import ServerSession

logger = logging.getLogger(__name__)

MAX_PING_INTERVAL_S: Final = 30.0  # frp's default heartbeat interval


def session_user(session: ServerSession) -> dict[str, Any]:
    return user_info(session.user, session.metas, session.client_id)


def login_content(session: ServerSession, user: str, version: str, hostname: str) -> dict[str, Any]:
    return {
        "version": version,
        "hostname": hostname,
        "os": "",  # tunnelc does not report these
        "arch": "",
        "user": user,
        "timestamp": now_s(),
        "privilege_key": "",  # tunnelkit never sends a token-derived key to plugins
        "run_id": session.client_id,
        "pool_count": 0,
        "metas": dict(session.metas),
        "client_address": session.address,
    }


def work_conn_content(session: ServerSession) -> dict[str, Any]:
    return {
        "user": session_user(session),
        "run_id": session.client_id,
        "timestamp": now_s(),
        "privilege_key": "",
    }


def new_proxy_content(session: ServerSession, name: str, request: NewProxy) -> dict[str, Any]:
    return {
        "user": session_user(session),
        "proxy_name": name,
        "proxy_type": request.type,
        "use_encryption": False,
        "use_compression": False,
        "bandwidth_limit": "",
        "bandwidth_limit_mode": "",
        "group": "",
        "group_key": "",
        "remote_port": request.remote_port,
        "custom_domains": list(request.custom_domains),
        "subdomain": request.subdomain,
        "locations": list(request.locations),
        "http_user": request.http_user,
        "http_pwd": request.http_password,
        "host_header_rewrite": request.host_header_rewrite,
        "headers": dict(request.request_headers),
        "metas": dict(request.metadatas),  # the proxy's own `metadatas`, as frpc sends them
    }


def apply_new_proxy(request: NewProxy, content: dict[str, Any]) -> NewProxy:
    """The request with a plugin's changes; a malformed change is a refusal, not a crash."""
    try:
        return replace(
            request,
            remote_port=_int(content.get("remote_port", request.remote_port)),
            custom_domains=_strs(content.get("custom_domains", request.custom_domains)),
            subdomain=str(content.get("subdomain", request.subdomain) or ""),
            locations=_strs(content.get("locations", request.locations)),
            http_user=str(content.get("http_user", request.http_user) or ""),
            http_password=str(content.get("http_pwd", request.http_password) or ""),
            host_header_rewrite=str(
                content.get("host_header_rewrite", request.host_header_rewrite) or ""
            ),
            request_headers={
                str(k): str(v)
                for k, v in dict(content.get("headers", request.request_headers) or {}).items()
            },
            metadatas={
                str(k): str(v)
                for k, v in dict(content.get("metas", request.metadatas) or {}).items()
            },
        )
    except (TypeError, ValueError) as exc:
        raise ProxyRefused(
            f"a server plugin changed the proxy into something invalid: {exc}"
        ) from None


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"remote_port must be a port number, got {value!r}")
    return value


def _strs(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def user_conn_content(
    session_user_info: dict[str, Any], proxy: str, proxy_type: str, remote: tuple[str, int]
) -> dict[str, Any]:
    return {
        "user": session_user_info,
        "proxy_name": proxy,
        "proxy_type": proxy_type,
        "remote_addr": f"{remote[0]}:{remote[1]}",
    }


async def ping_loop(server: TunnelServer) -> None:
    """Send Ping for every session each interval; drop a session a plugin rejects."""
    plugins = server.plugins
    interval = min(MAX_PING_INTERVAL_S, server.config.heartbeat_timeout / 3)
    while True:
        await asyncio.sleep(interval)
        for session in list(server.sessions.values()):
            content = {
                "user": session_user(session),
                "timestamp": now_s(),
                "privilege_key": "",
            }
            try:
                await plugins.call("Ping", content)
            except PluginRejected as exc:
                if server.sessions.get(session.client_id) is session:
                    drop_session(server, session, f"rejected by a server plugin: {exc.reason}")
