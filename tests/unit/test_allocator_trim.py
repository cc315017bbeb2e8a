"""The allocator's trim timer: one malloc_trim per wave of events, bounded in delay."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from tunnel_common import allocator

INTERVAL_S: Final = 0.2
MAX_DELAY_S: Final = 0.6
DEADLINE_S: Final = 30.0  # generous: a loaded machine delays timers
EARLY_S: Final = 0.01  # an event loop may run a timer up to its clock resolution early


async def test_trim_timer_trims_once_after_a_wave() -> None:
    """Events in quick succession give one trim, no earlier than the interval after the last."""
    loop = asyncio.get_running_loop()
    timer = allocator.TrimTimer(INTERVAL_S, MAX_DELAY_S)
    for _ in range(5):
        timer.schedule()
    last = loop.time()
    assert timer.pending
    async with asyncio.timeout(DEADLINE_S):
        await timer.trimmed.wait()
    assert loop.time() - last >= INTERVAL_S - EARLY_S
    assert not timer.pending
    await asyncio.sleep(INTERVAL_S * 2)
    assert timer.trims == 1


async def test_trim_timer_trims_by_the_max_delay_under_steady_events() -> None:
    """Events that never pause still get a trim once the wave is max_delay_s old."""
    loop = asyncio.get_running_loop()
    timer = allocator.TrimTimer(INTERVAL_S, MAX_DELAY_S)
    first = loop.time()
    try:
        async with asyncio.timeout(DEADLINE_S):
            for _ in range(int(DEADLINE_S / (INTERVAL_S / 4))):
                timer.schedule()  # postpones by INTERVAL_S each time
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(INTERVAL_S / 4):
                        await timer.trimmed.wait()
                        break
    finally:
        timer.cancel()
    assert timer.trims == 1
    assert loop.time() - first >= MAX_DELAY_S - EARLY_S


async def test_trim_timer_cancel_drops_the_pending_trim() -> None:
    """A cancelled timer (a stopping server or client) does not trim."""
    timer = allocator.TrimTimer(INTERVAL_S, MAX_DELAY_S)
    timer.schedule()
    timer.cancel()
    assert not timer.pending
    await asyncio.sleep(INTERVAL_S * 2)
    assert timer.trims == 0


async def test_trim_timer_waits_for_quiet() -> None:
    """With `quiet`, a due trim waits while work goes on and trims once it has passed."""
    loop = asyncio.get_running_loop()
    looks: list[float] = []
    busy_looks = 3

    def quiet() -> bool:
        looks.append(loop.time())
        return len(looks) > busy_looks

    timer = allocator.TrimTimer(INTERVAL_S, MAX_DELAY_S, quiet=quiet)
    timer.schedule()
    started = loop.time()
    async with asyncio.timeout(DEADLINE_S):
        await timer.trimmed.wait()
    assert timer.trims == 1
    assert len(looks) == busy_looks + 1
    assert looks[-1] - started >= INTERVAL_S * (busy_looks + 1) - EARLY_S
    assert not timer.pending
