"""Listening sockets bound and put into listen() by us, before an event loop gets them.

asyncio's and aiohttp's `create_server(host, port)` leave `listen()` to the event loop. uvloop
reports a failing `listen()` (EADDRINUSE when another process bound the same port at the same
moment) only to its exception handler and closes the handle, after which `server.sockets`
holds None and reading the bound port fails with "'NoneType' object has no attribute
'getsockname'". Binding and listening here turns that race into an ordinary OSError at the
call, and the port is read from our own socket.
"""

from __future__ import annotations

import socket
from typing import Final

DEFAULT_BACKLOG: Final = 1024


def ascii_host(host: str) -> str | bytes | None:
    """`host` for `socket.getaddrinfo` ("" is None): bytes when it is ASCII (an address or a
    plain name). A str host goes through the idna codec, whose import (stringprep and
    unicodedata, 0.4 MiB of RSS) only an internationalized name needs."""
    if not host:
        return None
    return host.encode("ascii") if host.isascii() else host


def listen_sockets(
    host: str, port: int, *, backlog: int = DEFAULT_BACKLOG, reuse_port: bool = False
) -> list[socket.socket]:
    """Bind every address `host` resolves to ("" = all), on one port; listening, non-blocking.

    `reuse_port` sets SO_REUSEPORT: several processes share the port, and the kernel spreads
    new connections across them (tunneld workers, cluster.reusePort).

    Port 0 picks a free port for the first address and reuses it for the others. Raises
    OSError (socket.gaierror for a name that does not resolve); nothing is left open then.
    """
    infos = socket.getaddrinfo(
        ascii_host(host), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
