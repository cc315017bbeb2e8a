"""The one list of proxy types, shared by config, messages and both registries."""

from enum import StrEnum


class ProxyType(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    HTTP = "http"
    HTTPS = "https"
    TCPMUX = "tcpmux"
    STCP = "stcp"  # secret tcp: reached only through a visitor that knows the secret
    SUDP = "sudp"  # secret udp, the same for datagrams
    XTCP = "xtcp"  # secret tcp, peer to peer when NAT allows (tunnel_client/xtcp*.py)
