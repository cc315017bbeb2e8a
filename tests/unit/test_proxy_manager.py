"""The server's proxy manager and a session's flow table (pure: no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.messages import NewProxy, UDPFlowClosed
from protocol.proxytype import ProxyType
from tunnel_server.departures import Departures
from tunnel_server.flows import FlowTable
from tunnel_server.manager import ProxyManager
from tunnel_server.stats import ServerStats


class _Session:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id


class _Proxy:
    def __init__(self, kind: ProxyType) -> None:
        self.type = kind
        self.public_urls: tuple[str, ...] = ()


def _manager() -> ProxyManager:
    stats = ServerStats(max_proxies=8)
    return ProxyManager(stats, Departures())


def _add(manager: ProxyManager, session: Any, name: str, kind: ProxyType = ProxyType.TCP) -> Any:
    return manager.add(session, name, _Proxy(kind), NewProxy(name, kind))  # type: ignore[arg-type]


def test_manager_owner_is_the_session_that_added_it() -> None:
    """owner() answers from the one table, for each session's own names."""
    manager = _manager()
    a, b = _Session("a"), _Session("b")
    _add(manager, a, "ssh")
    _add(manager, b, "web", ProxyType.HTTP)
    assert manager.owner("ssh") is a and manager.owner("web") is b
    assert manager.owner("nope") is None
    assert list(manager.of_session(a)) == ["ssh"]  # type: ignore[arg-type]


def test_manager_refuses_a_second_entry_for_one_name() -> None:
    """A name has at most one live entry on the server."""
    manager = _manager()
    _add(manager, _Session("a"), "ssh")
    with pytest.raises(ValueError, match="already registered"):
        _add(manager, _Session("b"), "ssh")


def test_manager_removed_proxy_becomes_an_offline_row_with_its_owner() -> None:
    """A closed proxy shows as offline with its client, kind, reason and kept counters."""
    manager = _manager()
    entry = _add(manager, _Session("a"), "ssh")
    entry.counters.connections_total = 3
    manager.remove("ssh", "session ended")
    assert manager.owner("ssh") is None and len(manager) == 0
    [row] = manager.departed()
    assert (row.name, row.client_id, row.type, row.state) == ("ssh", "a", "tcp", "offline")
    assert row.reason == "closed: session ended" and row.counters.connections_total == 3


def test_manager_returning_name_continues_its_counters() -> None:
    """A proxy that comes back under its name adds to the same counters."""
    manager = _manager()
    session = _Session("a")
    first = _add(manager, session, "ssh")
    first.counters.bytes_in = 10
    manager.remove("ssh", "gone")
    assert _add(manager, session, "ssh").counters.bytes_in == 10
    assert manager.departed() == []


def test_manager_of_session_forgets_a_session_with_no_proxies() -> None:
    """The per-session index holds no empty entries (it is bounded by live proxies)."""
    manager = _manager()
    session = _Session("a")
    _add(manager, session, "ssh")
    manager.remove("ssh", "gone")
    assert manager.of_session(session) == {}  # type: ignore[arg-type]
    assert manager._by_session == {}


class _Sink:
    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []
        self.closed: list[int] = []

    def datagram_from_client(self, flow_id: int, data: bytes) -> None:
        self.got.append((flow_id, data))

    def flow_closed_by_client(self, message: UDPFlowClosed) -> None:
        self.closed.append(message.flow_id)


def test_flow_table_routes_datagrams_to_the_owning_sink() -> None:
    """Each flow's datagrams and its close go to the proxy that opened it; late ones drop."""
    table = FlowTable()
    a, b = _Sink(), _Sink()
    fa, fb = table.open(a), table.open(b)
    assert fa is not None and fb is not None and fa != fb
    table.datagram(fa, b"x")
    table.datagram(fb, b"y")
    table.closed_by_client(UDPFlowClosed(fb, "bye"))
    table.close(fa)
    table.datagram(fa, b"late")
    assert a.got == [(fa, b"x")] and b.got == [(fb, b"y")] and b.closed == [fb]


def test_flow_table_is_bounded_and_reuses_no_live_id_after_a_wrap() -> None:
    """A full table refuses new flows; ids wrap past u32 without colliding with live ones."""
    table = FlowTable(max_flows=2)
    sink = _Sink()
    table._next = 0xFFFF_FFFF
    first = table.open(sink)
    second = table.open(sink)
    assert (first, second) == (0xFFFF_FFFF, 1)
    assert table.open(sink) is None
    table.close(second)
    table._next = 0xFFFF_FFFF  # the next id would be a live one: it is skipped
    assert table.open(sink) == 1
