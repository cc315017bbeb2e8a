"""How tunnelc reaches tunneld's port: which resolver (`dnsServer`), and which proxy.

`transport.proxyURL` sends the TCP connection through an HTTP CONNECT or SOCKS5 proxy, the
usual office set-up. The proxy handshakes are python-socks' (a maintained client for both),
and TLS then runs inside the tunnelled socket exactly as on a direct connection, so the
server is verified the same way. `dnsServer` resolves `serverAddr` with dnspython against
that server instead of the system resolver, as frp does.

Proxy and DNS failures are network errors: they raise `ConnectionError` (an OSError) with
one line naming the proxy (its password replaced by ***) or the DNS server, and the client
retries them like a refused connection.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

DNS_PORT: Final = 53


@dataclass(frozen=True, slots=True)
class DialParams:
    """Where the TCP connection to tunneld goes before TLS starts."""

    proxy_url: str | None = None  # http://, socks5://, socks5h:// or socks4:// (with user:pass)
    dns_server: tuple[str, int] | None = None  # (ip, port) that resolves serverAddr


def dns_server_address(text: str) -> tuple[str, int] | None:
    """frp's dnsServer: "ip" or "ip:port" ("[v6]:port" for IPv6); None if it is neither."""
    host, port = text, DNS_PORT
    if text.startswith("["):
        head, sep, tail = text[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            return None
        host, port_text = head, tail[1:]
        if tail:
            if not port_text.isdigit():
                return None
            port = int(port_text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text.isdigit():
            return None
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return (host, port) if 1 <= port <= 65535 else None


def split_server_addr(text: str, default_port: int) -> tuple[str, int] | None:
    """A `serverAddrs` entry: "host", "host:port" or "[v6]:port"; None if it is none of them."""
    host, port = text, default_port
    if text.startswith("["):
        head, sep, tail = text[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            return None
        host = head
        if tail:
            if not tail[1:].isdigit():
                return None
            port = int(tail[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text.isdigit():
            return None
        port = int(port_text)
    if not host or any(ch.isspace() for ch in host):
        return None
    return (host, port) if 1 <= port <= 65535 else None


def redacted(url: str) -> str:
    """The proxy URL as logs and errors show it: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(host: str, server: tuple[str, int], timeout: float) -> str:  # noqa: ASYNC109
    """An address of `host` from the DNS server `server` (IPv4 first, then IPv6)."""
    if _is_ip(host):
        return host
    # dnspython and python_socks are imported when a dial needs them: most clients use neither,
    # and every tunnelc start would pay for loading them.
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [server[0]]
    resolver.port = server[1]
    resolver.lifetime = timeout
    where = f"dnsServer {server[0]}:{server[1]}"
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.Timeout:
            raise ConnectionError(f"{where} did not answer for {host} in {timeout:g}s") from None
        except dns.exception.DNSException as exc:
            raise ConnectionError(f"{where} could not resolve {host}: {exc}") from None
        for record in answer:
            return str(record.address)
    raise ConnectionError(f"{where} has no address for {host}")


async def open_socket(
    host: str,
    port: int,
    params: DialParams,
    timeout: float,  # noqa: ASYNC109 -- one deadline for DNS and the proxy handshake
) -> tuple[str, socket.socket | None]:
    """(host to dial, connected socket or None for "dial it directly").

    With a proxy, the socket is already connected to host:port through it. Without one the
    caller dials the returned host, which `dnsServer` may have turned into an address.
    """
    if params.dns_server is not None:
        host = await resolve(host, params.dns_server, timeout)
    if params.proxy_url is None:
        return host, None
    from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
    from python_socks.async_.asyncio import Proxy

    proxy = Proxy.from_url(params.proxy_url)
    try:
        sock = await proxy.connect(dest_host=host, dest_port=port, timeout=timeout)
    except ProxyTimeoutError:
        raise ConnectionError(
            f"transport.proxyURL {redacted(params.proxy_url)}: no answer in {timeout:g}s"
        ) from None
    except (ProxyConnectionError, ProxyError) as exc:
        raise ConnectionError(
            f"transport.proxyURL {redacted(params.proxy_url)}: cannot reach {host}:{port}: {exc}"
        ) from None
    logger.debug("tunnelc: connected to %s:%d through %s", host, port, redacted(params.proxy_url))
    return host, sock
