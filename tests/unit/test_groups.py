"""Load-balanced groups (pure): joining, refusals, round robin, leaving."""

from __future__ import annotations

import pytest

from tunnel_server.errors import ProxyRefused
from tunnel_server.groups import MAX_LEFT_MEMBERS, Groups


class _Member:
    def __init__(self, name: str, available: bool = True) -> None:
        self.name = name
        self.available = available


def test_groups_round_robin_skips_members_going_away() -> None:
    """Each pick takes the next member; one whose session is closing is skipped."""
    groups = Groups()
    a, b, c = _Member("a"), _Member("b"), _Member("c")
    for m in (a, b, c):
        group = groups.join("tcp", "", "web", "k", "port 80", m, f"client-{m.name}")
    assert [group.pick() for _ in range(6)] == [a, b, c, a, b, c]
    b.available = False
    assert [group.pick() for _ in range(4)] == [a, c, c, a]


def test_groups_refuse_a_wrong_key_and_another_face() -> None:
    """A member must give the group's key and share its port or route."""
    groups = Groups()
    groups.join("tcp", "", "web", "k", "port 80", _Member("a"), "c1")
    with pytest.raises(ProxyRefused, match="groupKey does not match"):
        groups.join("tcp", "", "web", "K", "port 80", _Member("b"), "c2")
    with pytest.raises(ProxyRefused, match="serves port 80; this proxy asks for port 81"):
        groups.join("tcp", "", "web", "k", "port 81", _Member("b"), "c2")


def test_groups_are_per_kind_and_user() -> None:
    """Two users' groups of one name are two groups (names belong to users)."""
    groups = Groups()
    one = groups.join("tcp", "alice", "web", "k", "port 80", _Member("a"), "c1")
    two = groups.join("tcp", "bob", "web", "other", "port 81", _Member("b"), "c2")
    three = groups.join("http", "alice", "web", "x", "a.test at /", _Member("c"), "c3")
    assert len({id(one), id(two), id(three)}) == 3 and len(groups) == 3


def test_groups_last_leave_empties_and_forgets_the_group() -> None:
    """leave() says when the face must close; a later join makes a fresh group."""
    groups = Groups()
    a, b = _Member("a"), _Member("b")
    group = groups.join("tcp", "", "web", "k", "port 80", a, "c1")
    groups.join("tcp", "", "web", "k", "port 80", b, "c2")
    assert groups.leave(group, a) is False
    assert [m.name for m in group.left.values()] == ["a"] and group.pick() is b
    assert groups.leave(group, b) is True and len(groups) == 0
    fresh = groups.join("tcp", "", "web", "new-key", "port 80", a, "c1")
    assert fresh is not group


def test_groups_refuse_past_the_group_limit_and_bound_left_members() -> None:
    """The table of groups and each group's memory of departed members are bounded."""
    groups = Groups(max_groups=1)
    group = groups.join("tcp", "", "web", "k", "port 80", _Member("keep"), "c0")
    with pytest.raises(ProxyRefused, match="holds 1 groups"):
        groups.join("tcp", "", "other", "k", "port 81", _Member("x"), "c1")
    for i in range(MAX_LEFT_MEMBERS + 5):
        member = _Member(f"m{i}")
        groups.join("tcp", "", "web", "k", "port 80", member, f"c{i}")
        groups.leave(group, member)
    assert len(group.left) == MAX_LEFT_MEMBERS and "m0" not in group.left
