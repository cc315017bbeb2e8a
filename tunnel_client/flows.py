"""Datagram flows on the client: which proxy serves each flow the server announces.

A proxy kind that takes datagrams (udp today) implements `DatagramProxy`; the client routes
UDPFlowOpened, DATAGRAM frames and UDPFlowClosed to it through `ClientFlows`, with no knowledge
of the kind. The table is bounded by MAX_FLOWS_PER_CLIENT: a flow beyond it is closed at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Protocol, runtime_checkable

from protocol.aio.connection import MuxSession
from protocol.messages import Message, UDPFlowClosed, UDPFlowOpened

MAX_FLOWS_PER_CLIENT: Final = 4096


@runtime_checkable
class DatagramProxy(Protocol):
    """A client proxy that serves datagram flows."""

    def flow_opened(self, session: MuxSession, message: UDPFlowOpened, packet_size: int) -> bool:
        """Serve a new flow; False when refused (the proxy told the server why)."""
        ...

    def has_flow(self, flow_id: int) -> bool: ...

    def datagram(self, flow_id: int, data: bytes) -> None: ...

    def close_flow(self, flow_id: int, reason: str, *, notify: bool) -> None: ...

    def flow_stats(self) -> dict[str, int]:
        """Open flows, dropped datagrams and refused flows, for status rows."""
        ...


class ClientFlows:
    def __init__(self, proxies: Mapping[str, object], packet_size: Callable[[], int]) -> None:
        self._proxies = proxies
        self._packet_size = packet_size
        self._owner: dict[int, DatagramProxy] = {}

    def clear(self) -> None:
        self._owner.clear()

    def on_message(self, session: MuxSession, message: Message) -> bool:
        """Handle a flow message at once, before the datagrams that follow it; False if the
        message is not about flows."""
        if isinstance(message, UDPFlowOpened):
            proxy = self._proxies.get(message.proxy)
            if not isinstance(proxy, DatagramProxy):
                session.send_message(UDPFlowClosed(message.flow_id, "no such udp proxy"))
            elif len(self._owner) >= MAX_FLOWS_PER_CLIENT:
                session.send_message(UDPFlowClosed(message.flow_id, "client flow table full"))
            elif proxy.flow_opened(session, message, self._packet_size()):
                self._owner[message.flow_id] = proxy
            return True
        if isinstance(message, UDPFlowClosed):
            owner = self._owner.pop(message.flow_id, None)
            if owner is not None:
                owner.close_flow(message.flow_id, message.reason, notify=False)
            return True
        return False

    def on_datagram(self, flow_id: int, data: bytes) -> None:
        owner = self._owner.get(flow_id)
        if owner is None:
            return  # a late datagram for a flow that is gone
        if owner.has_flow(flow_id):
            owner.datagram(flow_id, data)
        else:
            del self._owner[flow_id]  # closed on the proxy's side (idle, failed socket)
