"""Public ports belong to the user holding them: another user is refused for good, the same
user's other session is told to wait (it may be a stale session of a reconnecting client)."""

from __future__ import annotations

import pytest

from tunnel_server.errors import ProxyHeld, ProxyRefused
from tunnel_server.ports import PortAllocator


def test_port_held_by_another_user_is_a_final_refusal() -> None:
    """alice's port: bob gets a final ProxyRefused, alice's other client a ProxyHeld; once
    released, bob may take it."""
    ports = PortAllocator((), 0)
    ports.hold("c-alice", "tcp", 6000, "alice")
    with pytest.raises(ProxyRefused, match="port 6000 is held by another user") as info:
        ports.check("c-bob", "tcp", 6000, "bob")
    assert not isinstance(info.value, ProxyHeld)
    with pytest.raises(ProxyHeld, match="held by another session"):
        ports.check("c-alice-2", "tcp", 6000, "alice")
    ports.check("c-bob", "udp", 6000, "bob")  # another protocol's port is another port
    ports.release("c-alice", "tcp", 6000)
    ports.check("c-bob", "tcp", 6000, "bob")
