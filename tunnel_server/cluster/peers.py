"""The visitors behind relayed connections.

A node that owns a route serves a relayed request by dialling its own public port over
loopback (tunnel_server/cluster/relay.py), so the request takes exactly the path of a public
one: the edge's dispatch, TLS termination, the vhost's rules, quotas and access log. Before it
connects, it binds the loopback socket and records its address here with the original
visitor's address; the vhost's connection then reports that visitor as its peer (for
X-Forwarded-For, allowIPs/denyIPs and the logs), and is marked as relayed so that it is
never relayed again.
"""

from __future__ import annotations

from typing import Final

Address = tuple[str, int]

MAX_RELAYED_PEERS: Final = 65536  # loopback connections being relayed at once, per node

# loopback (address, port) of a relaying socket -> the original visitor's (address, port)
RELAYED_PEERS: dict[Address, Address] = {}


def remember(local: Address, visitor: Address) -> bool:
    """Record a relaying socket's address; False when the table is full."""
    if len(RELAYED_PEERS) >= MAX_RELAYED_PEERS:
        return False
    RELAYED_PEERS[local] = visitor
    return True


def forget(local: Address) -> None:
    RELAYED_PEERS.pop(local, None)


def visitor_of(peer: Address) -> Address | None:
    """The original visitor behind a relayed connection from `peer`, or None."""
    return RELAYED_PEERS.get(peer) if RELAYED_PEERS else None
