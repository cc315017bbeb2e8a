"""The tcpmux listener's relay: a CONNECT for a host whose route another node owns.

The tcpmux listener (vhost/tcpmux.py) reads the CONNECT head and looks the host up in its own
router. When no route here serves it, `tcpmux_relay`'s hook asks the registry's cache which
node owns the host, and sends the connection there over the internal link, from its first
byte: the owner's own tcpmux port answers the CONNECT (credentials, 200, the splice) as for a
visitor of its own, with the visitor's address. A connection another node relayed here is
never relayed again, so two caches that disagree cannot make a loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from ..vhost.inbound import InboundProtocol
from ..vhost.splice import splice
from ..vhost.tcpmux import answer
from ..vhost.upstream import close_stream
from .link import LinkError
from .relay import Relay

logger = logging.getLogger(__name__)

UNREACHABLE: Final = "the node that serves this host cannot be reached now"

# (connection, CONNECT host, Proxy-Authorization user, every byte read so far):
# None = not owned elsewhere; True/False = relayed, then close cleanly / abort.
TCPMuxRelay = Callable[[InboundProtocol, str, str, bytes], Awaitable[bool | None]]


def tcpmux_relay(relay: Relay) -> TCPMuxRelay:
    """The tcpmux listener's hook for hosts that another node serves."""

    async def hook(conn: InboundProtocol, host: str, user: str, data: bytes) -> bool | None:
        if conn.relayed:
            return None  # relayed to us: served here or not at all
        node = relay.owner_of_http(host, "/", user)
        if node is None:
            return None
        logger.debug("cluster relay: tcpmux %s from %s to node %s", host, conn.peer[0], node)
        try:
            stream = await relay.open(node, "tcpmux", conn.peer)
        except LinkError as exc:
            relay.failures += 1
            logger.warning("tunneld: cluster: cannot relay %s to node %s: %s", host, node, exc)
            conn.write(answer(502, UNREACHABLE))
            return True
        try:
            await stream.write(data)
            await splice(conn, stream)
        except BaseException:
            stream.abort()
            raise
        await close_stream(stream)
        return not conn.lost

    return hook
