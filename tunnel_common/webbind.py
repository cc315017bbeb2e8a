"""Start-up checks for the web surfaces' listen addresses, without aiohttp.

The surfaces bind at start and load aiohttp on their first connection
(tunnel_common/lazysite.py), so what refuses a bad config must not need aiohttp: it lives here,
and tunnel_common/webguard.py (the request guards, with aiohttp) uses it.
"""

from __future__ import annotations

import ipaddress


def check_web_bind(setting: str, addr: str, user: str | None, password: str | None) -> None:
    """Refuse to serve `setting` (e.g. "webServer" or "inspect") beyond this host without
    credentials; raises ValueError with a one-line message that names the fix."""
    if is_loopback_addr(addr) or (user and password):
        return
    raise ValueError(
        f"{setting}.addr = {addr!r} is reachable from other hosts, so it needs {setting}.user "
        f"and {setting}.password; set both, or bind {setting}.addr to 127.0.0.1"
    )


def is_loopback_addr(addr: str) -> bool:
    """Return True for a listen address only this host can reach (127.0.0.0/8, ::1, localhost)."""
    host = addr.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_enabled(user: str | None, password: str | None) -> bool:
    """Basic auth is on as soon as either a user or a password is configured."""
    return bool(user) or bool(password)
