"""Datagram flows of one client session: flow ids and the proxy each flow belongs to.

Any proxy kind that carries datagrams (udp today) opens its flows here and is a
`DatagramSink`; the session hands each DATAGRAM frame and each UDPFlowClosed message from the
client to the flow's sink, with no knowledge of the kind. The table is bounded per session by
MAX_FLOWS_PER_SESSION: `open` returns None when it is full.
"""

from __future__ import annotations

from typing import Final, Protocol

from protocol.messages import UDPFlowClosed

MAX_FLOWS_PER_SESSION: Final = 4096  # datagram flows one client's proxies may hold at once
MAX_FLOW_ID: Final = 0xFFFF_FFFF  # flow ids are u32 on the wire; 0 is never used


class DatagramSink(Protocol):
    """Where a client's datagrams for one flow go."""

    def datagram_from_client(self, flow_id: int, data: bytes) -> None: ...

    def flow_closed_by_client(self, message: UDPFlowClosed) -> None: ...


class FlowTable:
    def __init__(self, max_flows: int = MAX_FLOWS_PER_SESSION) -> None:
        self.max_flows = max_flows
        self._next = 1
        self._sinks: dict[int, DatagramSink] = {}

    def __len__(self) -> int:
        return len(self._sinks)

    def open(self, sink: DatagramSink) -> int | None:
        """A fresh flow id owned by `sink`, or None when the session's table is full."""
        if len(self._sinks) >= self.max_flows:
            return None
        flow_id = self._next
        while flow_id in self._sinks:  # after a wrap, skip ids still in use
            flow_id = (flow_id % MAX_FLOW_ID) + 1
        self._next = (flow_id % MAX_FLOW_ID) + 1
        self._sinks[flow_id] = sink
        return flow_id

    def close(self, flow_id: int) -> None:
        self._sinks.pop(flow_id, None)

    def datagram(self, flow_id: int, data: bytes) -> None:
        """A datagram from the client; one for a flow that is gone is dropped (late)."""
        sink = self._sinks.get(flow_id)
        if sink is not None:
            sink.datagram_from_client(flow_id, data)

    def closed_by_client(self, message: UDPFlowClosed) -> None:
        sink = self._sinks.get(message.flow_id)
        if sink is not None:
            sink.flow_closed_by_client(message)
