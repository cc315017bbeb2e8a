"""Attacks on AcceptDeadlines (protocol/aio/deadlines.py) with a fake loop clock.

Many items with mixed timeouts are added, moved, discarded (accepted, reset, closed) and left
to expire in any order Hypothesis picks, while the clock jumps; the fake loop fires timers in
deadline order and, like asyncio, up to its clock resolution early. Invariants: the table holds
exactly the waiting items (at most one entry each), every item still waiting at its deadline
expires once the clock passes it, none expires early or after it left, and close() leaves no
timer armed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, cast

import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from protocol.aio.deadlines import AcceptDeadlines
from tests.fuzz.budget import FUZZ_SETTINGS, fuzz_examples

RESOLUTION = 1e-6  # a timer may fire this early, as asyncio's does (its clock resolution)


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """time() and call_at() of an event loop, driven by `advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._heap: list[tuple[float, int, FakeHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def armed(self) -> list[FakeHandle]:
        return [h for _, _, h in self._heap if not h.cancelled]

    def advance(self, seconds: float) -> None:
        """Move the clock, running each timer due by then at its own time (or just before)."""
        end = self.now + seconds
        for _ in range(10_000):
            if not self._heap or self._heap[0][0] > end:
                break
            when, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            if self.now < when - RESOLUTION:
                self.now = min(end, when - RESOLUTION)  # asyncio may run a timer this early
            else:  # re-armed after an early run: by the next iteration the clock has moved
                self.now = max(self.now, min(end, when))
            handle.callback()
        else:
            raise AssertionError("timers keep re-arming without the clock moving")
        self.now = max(self.now, end)


_TIMEOUTS = [0.0, 0.1, 0.3, 0.30000000000000004, 1.0, 5.0, math.inf]
_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 15), st.sampled_from(_TIMEOUTS)),
    st.tuples(st.just("discard"), st.integers(0, 15), st.just(0.0)),
    st.tuples(st.just("advance"), st.integers(0, 15), st.sampled_from([0.0, 0.05, 0.1, 0.5, 2])),
)


@hsettings(parent=FUZZ_SETTINGS, max_examples=max(1, fuzz_examples() // 2))
@example(  # two items 10 ms apart under one timeout, and one under another in between
    ops=[
        ("add", 1, 0.1),
        ("advance", 0, 0.01),
        ("add", 2, 0.1),
        ("add", 3, 0.1),
        ("add", 4, 0.3),
        ("advance", 0, 0.1),
        ("advance", 0, 0.05),
        ("advance", 0, 0.5),
    ],
    close_at_end=False,
)
@given(ops=st.lists(_op, max_size=120), close_at_end=st.booleans())
def test_accept_deadlines_attacks_expire_exactly_the_waiting_items(
    ops: list[tuple[str, int, float]], close_at_end: bool
) -> None:
    """Mixed timeouts, moves, discards and clock jumps: each waiting item expires once, on
    time, and nothing else does; close() disarms the timer."""
    loop = FakeLoop()
    waiting: dict[int, float] = {}  # item -> deadline, the reference model
    expired: list[int] = []

    def expire(item: int, timeout_s: float) -> None:
        assert item in waiting, f"item {item} expired but it was not waiting"
        assert loop.now + RESOLUTION >= waiting[item], f"item {item} expired early"
        del waiting[item]
        expired.append(item)

    deadlines = AcceptDeadlines[int](cast(asyncio.AbstractEventLoop, loop), expire)
    for kind, item, value in ops:
        if kind == "add":
            deadlines.add(item, value)
            waiting[item] = loop.now + value
        elif kind == "discard":
            deadlines.discard(item)
            waiting.pop(item, None)
        else:
            loop.advance(value)
            overdue = [i for i, at in waiting.items() if at <= loop.now - RESOLUTION]
            assert overdue == [], f"items {overdue} are past their deadline and still waiting"
        assert len(deadlines) == len(waiting)
        if waiting and min(waiting.values()) < math.inf:
            assert loop.armed(), "items wait and no timer is armed"
    if close_at_end:
        deadlines.close()
        assert len(deadlines) == 0
        assert loop.armed() == []
        before = list(expired)
        loop.advance(100.0)
        assert expired == before
    else:
        loop.advance(100.0)
        assert [i for i, at in waiting.items() if at < math.inf] == []


def test_accept_deadlines_attacks_expire_callback_that_discards_and_adds() -> None:
    """An expire callback that discards a later item and adds a new one keeps the table true
    and the timer armed for what is left."""
    loop = FakeLoop()
    seen: list[str] = []
    holder: dict[str, Any] = {}

    def expire(item: str, timeout_s: float) -> None:
        seen.append(item)
        if item == "a":
            holder["d"].discard("c")  # a's expiry closes c (accepted meanwhile)
            holder["d"].add("e", 0.5)

    deadlines = AcceptDeadlines[str](cast(asyncio.AbstractEventLoop, loop), expire)
    holder["d"] = deadlines
    deadlines.add("a", 0.1)
    deadlines.add("b", 1.0)
    deadlines.add("c", 2.0)
    loop.advance(0.2)
    assert seen == ["a"] and len(deadlines) == 2
    loop.advance(0.45)
    assert seen == ["a", "e"]
    loop.advance(0.5)
    assert seen == ["a", "e", "b"]
    loop.advance(5.0)
    assert seen == ["a", "e", "b"] and len(deadlines) == 0


@pytest.mark.parametrize("then", ["discard", "close", "add"])
def test_accept_deadlines_attacks_item_discarded_during_a_sweep_does_not_expire(then: str) -> None:
    """Two items due in one sweep: the first's expiry accepts (discards) the second, or the
    session closes; the second must not expire after it left, nor after close()."""
    loop = FakeLoop()
    seen: list[str] = []
    holder: dict[str, AcceptDeadlines[str]] = {}

    def expire(item: str, timeout_s: float) -> None:
        seen.append(item)
        if item == "a" and then == "discard":
            holder["d"].discard("b")
        elif item == "a" and then == "close":
            holder["d"].close()
        elif item == "a":
            holder["d"].add("b", 1.0)  # moved: due later, not now

    deadlines = AcceptDeadlines[str](cast(asyncio.AbstractEventLoop, loop), expire)
    holder["d"] = deadlines
    deadlines.add("a", 0.1)
    deadlines.add("b", 0.1)
    loop.advance(0.2)
    assert seen == ["a"]
    loop.advance(2.0)
    assert seen == (["a", "b"] if then == "add" else ["a"])
    assert len(deadlines) == 0
