"""PROXY protocol headers (HAProxy's v1 text and v2 binary) for the local service.

With `transport.proxyProtocolVersion`, each connection (tcp, https) or datagram (udp) the
client hands to the local service starts with a header naming the visitor's address, which
the server sent with the stream (`StreamHeader.src_addr/src_port`) or the UDP flow. The
bytes come from the `proxy-protocol` package; this module only picks the addresses.

The destination is the public side the visitor reached: the server's address as this client
sees it and the proxy's public port. v1 and v2 need both addresses in one family, so when
they differ the destination is the unspecified address of the visitor's family.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import TYPE_CHECKING

# proxy-protocol (and typing_extensions with it, about 1 MiB of RSS) loads with the first
# header: a client without transport.proxyProtocolVersion never imports it.
if TYPE_CHECKING:
    from proxyprotocol import ProxyProtocol
    from proxyprotocol.result import ProxyResult


@functools.cache
def _packer(version: str) -> ProxyProtocol:
    if version == "v1":
        from proxyprotocol.v1 import ProxyProtocolV1

        return ProxyProtocolV1()
    from proxyprotocol.v2 import ProxyProtocolV2

    return ProxyProtocolV2()


def proxy_header(
    version: str,
    src: tuple[str, int],
    dst: tuple[str, int],
    *,
    datagram: bool = False,
) -> bytes:
    """The header for a visitor at `src` who reached `dst` ("v1" or "v2")."""
    kind = socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM
    result = _result(src, dst, kind)
    if version == "v1":
        if datagram:
            raise ValueError("PROXY protocol v1 has no UDP form; use v2")
        return _packer("v1").pack(result)
    return _packer("v2").pack(result)


def parse_peer(text: str) -> tuple[str, int]:
    """("ip", port) from "ip:port" or "[ipv6]:port" (a UDP flow's peer); ("", 0) if not."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return "", 0
    return host.strip("[]"), int(port)


def _result(src: tuple[str, int], dst: tuple[str, int], kind: socket.SocketKind) -> ProxyResult:
    from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6, ProxyResultUnknown

    try:
        src_ip = ipaddress.ip_address(src[0])
    except ValueError:
        return ProxyResultUnknown()  # not an IP address (never sent by tunneld): v1 UNKNOWN
    try:
        dst_ip = ipaddress.ip_address(dst[0])
    except ValueError:
        dst_ip = ipaddress.ip_address("0.0.0.0")
    if isinstance(src_ip, ipaddress.IPv4Address):
        if not isinstance(dst_ip, ipaddress.IPv4Address):
            dst_ip = ipaddress.IPv4Address(0)
        return ProxyResultIPv4((src_ip, src[1]), (dst_ip, dst[1]), protocol=kind)
    if not isinstance(dst_ip, ipaddress.IPv6Address):
        dst_ip = ipaddress.IPv6Address(0)
    return ProxyResultIPv6((src_ip, src[1]), (dst_ip, dst[1]), protocol=kind)
