"""What the dashboard needs from the running server, as a read-mostly Protocol.

The server implements `ServerView` over its session registry; the web code and the metrics
collector never touch sessions or listeners directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from tunnel_server.stats import ProxyCounters

ProxyStatus = Literal["online", "offline", "refused"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One logged-in client session."""

    client_id: str
    address: str  # peer "host:port" of the control connection
    version: str  # the client's software version from Login
    user: str
    since: float  # epoch seconds of login
    proxies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """One proxy as the dashboard shows it; `counters` is the live object from ServerStats."""

    name: str
    client_id: str
    type: str  # a ProxyType value
    public: tuple[str, ...]  # e.g. ("tcp://0.0.0.0:6000",) or one URL per HTTP domain
    status: ProxyStatus
    counters: ProxyCounters
    metadatas: dict[str, str] = field(default_factory=dict)  # frp's, as the client sent them
    annotations: dict[str, str] = field(default_factory=dict)
    bandwidth_limit: int = 0  # bytes per second the server paces it at; 0 = none
    bandwidth_rate: float = 0.0  # bytes per second through it now (server-paced proxies)
    reason: str = ""  # why it is offline (closed: ...) or refused
    group: str = ""  # its load-balancing group (loadBalancer.group), "" for none
    # stcp/sudp: the user of each visitor connection joined now, and its path ("relayed")
    visitors: tuple[str, ...] = ()
    path: str = ""
    # xtcp: rendezvous started, direct paths made, punches failed (the visitors then relay)
    p2p: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupMemberInfo:
    """One proxy of a load-balanced group: in it now, or left (why, from its closing)."""

    name: str
    client_id: str
    state: Literal["online", "left"]
    healthy: bool  # False when it left because its client's health check failed
    reason: str  # why it left ("closed: unhealthy: ..."), "" while online


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A load-balanced group: its shared port or route, and its members."""

    name: str
    type: str
    user: str
    public: tuple[str, ...]
    members: tuple[GroupMemberInfo, ...]


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """One name the HTTPS edge serves or tries to: its certificate and the ACME state."""

    name: str
    source: str  # "file" or "acme"
    state: str  # "ready", "pending", "failed", "refused"
    detail: str  # the last failure or refusal reason, "" when fine
    not_after: float | None  # epoch seconds the certificate expires, None without one
    failures: int  # consecutive failed orders


@dataclass(frozen=True, slots=True)
class CertificateReport:
    """Every certificate name, plus the ACME totals (0 without tls.acme)."""

    certificates: tuple[CertificateInfo, ...]
    orders_total: int
    failures_total: int


class ServerView(Protocol):
    """Read and control the running server from the web surface (all calls are synchronous)."""

    def clients(self) -> list[ClientInfo]:
        """Return every logged-in client."""
        ...

    def proxies(self) -> list[ProxyInfo]:
        """Return every proxy, online or recently offline."""
        ...

    def kick_client(self, client_id: str) -> bool:
        """Close the session of `client_id`; False when there is no such client."""
        ...

    def close_proxy(self, client_id: str, name: str) -> bool:
        """Close one proxy of one client; False when there is no such proxy."""
        ...
