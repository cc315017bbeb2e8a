"""Reload a running tunneld's config (SIGHUP, `tunneld reload`) without dropping what stays.

What changes live: the shared token, allowIPs/denyIPs, allowPorts and maxPortsPerClient, the
user store (re-read at once), and the access log. Sessions and proxies that the new rules still
allow keep running untouched; a session from an address now denied, a session whose shared
token is no longer accepted, and a proxy on a port now outside allowPorts are closed with a
reason. Keys that need new listeners (bindPort, vhost ports, the certificate, the dashboard)
keep their old values, and the reload says so in one line.

The pid file (`stateDir/tunneld.pid`) tells `tunneld reload` whom to signal.
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Final

from protocol.auth import derive_key

from .accesslog import AccessLog
from .config import ServerConfig
from .users.directory import drop_session

if TYPE_CHECKING:
    from .server import TunnelServer

logger = logging.getLogger(__name__)

PID_FILE: Final = "tunneld.pid"
# Keys that only take effect at start (new listeners or identities): kept as they were.
RESTART_ONLY: Final = frozenset(
    {
        "bind_addr",
        "bind_port",
        "proxy_bind_addr",
        "vhost_http_port",
        "vhost_https_port",
        "sub_domain_host",
        "tls_cert_file",
        "tls_key_file",
        "state_dir",
        "web",
        "enable_prometheus",
        "log",
        "user_store_file",
        "max_clients",
        "max_pending_logins",
        "max_pending_logins_per_ip",
        # The OIDC verifier exists only when tunneld starts with auth.method = "oidc": switching
        # method live would leave logins with the empty key and no token check at all.
        "auth_method",
        "oidc_issuer",
        "oidc_audience",
        "oidc_skip_expiry",
        "oidc_skip_issuer",
    }
)


def pid_file(config: ServerConfig) -> Path:
    return config.state_dir / PID_FILE


def write_pid_file(config: ServerConfig) -> None:
    path = pid_file(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(f"{os.getpid()}\n", encoding="ascii")
    except OSError as exc:
        logger.warning("tunneld: cannot write %s (tunneld reload needs it): %s", path, exc)


def remove_pid_file(config: ServerConfig) -> None:
    path = pid_file(config)
    try:
        if path.read_text(encoding="ascii").strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass  # already gone, or never written: nothing to clean up


def apply_reload(server: TunnelServer, new: ServerConfig) -> None:
    """Switch `server` to `new` for everything that can change live (see the module doc)."""
    old = server.config
    kept = [
        f.name
        for f in fields(ServerConfig)
        if f.name in RESTART_ONLY and getattr(old, f.name) != getattr(new, f.name)
    ]
    keep = {name: getattr(old, name) for name in RESTART_ONLY if hasattr(old, name)}
    merged = ServerConfig(**{**{f.name: getattr(new, f.name) for f in fields(new)}, **keep})
    server.config = merged
    server.ip_rules = merged.ip_rules
    server.departures.ttl_s = merged.departed_metrics_ttl
    server.ports.set_rules(merged.allow_ports, merged.max_ports_per_client)
    token = merged.auth_token.reveal() if merged.auth_token is not None else None
    if merged.auth_method == "oidc" and token is None:
        token = ""  # as at start: OIDC alone uses the empty shared key plus a verified JWT
    server.users.shared_token = token
    server.auth_key = derive_key(token or "", server.cert_fp)
    server.users.shared_key = server.auth_key
    _reopen_access_log(server, old, merged)
    server.users.refresh(force=True)
    dropped = closed = 0
    for session in list(server.sessions.values()):
        if not server.ip_rules.permits(session.peer_ip):
            drop_session(server, session, "your address is no longer allowed on this server")
            dropped += 1
            continue
        for name, proxy in list(session.proxies.items()):
            port = getattr(proxy, "port", 0)
            if port and not merged.allows_port(port):
                session.close_proxy(
                    name,
                    f"port {port} is no longer allowed by the server (allowPorts)",
                    notify=True,
                )
                closed += 1
    server.users.enforce(server)  # users disabled, rotated or removed; shared token changes
    logger.info(
        "tunneld: reloaded the configuration (%d sessions dropped, %d proxies closed)%s",
        dropped,
        closed,
        f"; these need a restart and keep their old values: {', '.join(sorted(kept))}"
        if kept
        else "",
    )


def _reopen_access_log(server: TunnelServer, old: ServerConfig, new: ServerConfig) -> None:
    if (old.access_log_to, old.access_log_format) == (new.access_log_to, new.access_log_format):
        return
    if server.access_log is not None:
        server.access_log.close()
        server.access_log = None
    if new.access_log_to is not None:
        try:
            server.access_log = AccessLog(new.access_log_to, new.access_log_format)
        except OSError as exc:
            logger.error("tunneld: accessLog.to %s: cannot open: %s", new.access_log_to, exc)
