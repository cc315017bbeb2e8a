"""The pending-login table: slots always come back, the oldest is evicted, bursts are told
to retry."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from tunnel_server.prelogin import PendingLogins, PendingSlot


class Evictions:
    def __init__(self) -> None:
        self.names: list[str] = []

    def of(self, name: str) -> Callable[[], None]:
        return lambda: self.names.append(name)


def test_prelogin_most_stalled_of_the_same_address_is_evicted_first() -> None:
    """At the per-address limit a newcomer evicts that address's most stalled connection."""
    table = PendingLogins(max_total=10, max_per_ip=2, stall_s=1.0)
    ev = Evictions()
    table.admit("1.1.1.1", 0.0, ev.of("a1"))
    table.admit("2.2.2.2", 0.0, ev.of("b1"))
    table.admit("1.1.1.1", 0.5, ev.of("a2"))
    assert table.admit("1.1.1.1", 2.0, ev.of("a3")) is not None
    assert ev.names == ["a1"]
    assert table.count("1.1.1.1") == 2 and table.count("2.2.2.2") == 1
    assert table.counters.pending_evicted == 1


def test_prelogin_global_limit_evicts_the_most_stalled_of_any_address() -> None:
    """At the global limit a newcomer evicts the most stalled pending connection overall."""
    table = PendingLogins(max_total=2, max_per_ip=2, stall_s=1.0)
    ev = Evictions()
    table.admit("1.1.1.1", 0.0, ev.of("a"))
    table.admit("2.2.2.2", 0.1, ev.of("b"))
    assert table.admit("3.3.3.3", 5.0, ev.of("c")) is not None
    assert ev.names == ["a"]
    assert len(table) == 2


def test_prelogin_young_entries_are_not_evicted_the_newcomer_is_busy() -> None:
    """When only connections that progressed within stall_s could make room, the newcomer is
    busy."""
    table = PendingLogins(max_total=1, max_per_ip=1, stall_s=1.0)
    ev = Evictions()
    table.admit("1.1.1.1", 0.0, ev.of("a"))
    assert table.admit("1.1.1.1", 0.5, ev.of("b")) is None
    assert ev.names == [] and len(table) == 1
    assert table.retry_after_ms() >= 100


def test_prelogin_progress_protects_an_older_connection() -> None:
    """An old connection that keeps taking steps outlives a younger idle one."""
    table = PendingLogins(max_total=2, max_per_ip=2, stall_s=1.0)
    ev = Evictions()
    busy_client = table.admit("1.1.1.1", 0.0, ev.of("client"))
    table.admit("1.1.1.1", 0.5, ev.of("idle"))
    assert busy_client is not None
    table.progressed(busy_client, 2.0)  # TLS done
    assert table.admit("1.1.1.1", 2.5, ev.of("new")) is not None
    assert ev.names == ["idle"]


def test_prelogin_release_is_idempotent_and_frees_the_slot() -> None:
    """Releasing twice is harmless; the address and the table are empty afterwards."""
    table = PendingLogins(max_total=4, max_per_ip=2)
    slot = table.admit("1.1.1.1", 0.0, lambda: None)
    assert slot is not None
    table.release(slot)
    table.release(slot)
    assert len(table) == 0 and table.count("1.1.1.1") == 0
    assert table.counters.pending_logins == 0


@given(
    st.lists(
        st.tuples(st.sampled_from(["admit", "release"]), st.integers(0, 5), st.floats(0, 2)),
        max_size=200,
    )
)
def test_prelogin_never_exceeds_its_limits_and_never_leaks(
    ops: list[tuple[str, int, float]],
) -> None:
    """Any sequence of admissions and releases keeps both limits, and releasing every live
    slot empties the table."""
    table = PendingLogins(max_total=6, max_per_ip=3, stall_s=0.5)
    live: list[PendingSlot] = []
    now = 0.0
    for op, who, step in ops:
        now += step
        if op == "admit":
            slot = table.admit(f"10.0.0.{who}", now, lambda: None)
            if slot is not None:
                live.append(slot)
        elif live:
            table.release(live.pop(who % len(live)))
        live = [s for s in live if not s.released]
        assert len(table) == len(live) <= 6
        assert all(table.count(f"10.0.0.{i}") <= 3 for i in range(6))
    for slot in live:
        table.release(slot)
    assert len(table) == 0
