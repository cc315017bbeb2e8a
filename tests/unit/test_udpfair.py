"""The UDP flows' fair queue (tunnel_server/udpfair.py): deficit round robin, bounded queues."""

from __future__ import annotations

from protocol.dgramframe import DATAGRAM_LENGTH_BYTES, PACKED_MAX_DATAGRAMS, pack_datagrams
from tunnel_server.stats import ProxyCounters
from tunnel_server.udpfair import FLOW_QUEUE_DATAGRAMS, PACK_MAX_BYTES, FairQueue

FLOOD = 1
QUIET = 2


def drain(queue: FairQueue) -> list[tuple[int, bytes]]:
    out = []
    while (item := queue.pop()) is not None:
        out.append((item[0], item[1]))
    return out


def test_fairqueue_quiet_flow_served_before_flood_backlog() -> None:
    """A quiet flow's datagram goes out within one round although a flood has a full queue."""
    queue = FairQueue()
    for i in range(FLOW_QUEUE_DATAGRAMS):
        assert queue.push(FLOOD, b"f%03d" % i + bytes(1396))
    assert queue.pop() is not None  # the flood's turn is under way
    assert queue.push(QUIET, b"ping")
    order = [flow for flow, _ in drain(queue)]
    assert order.index(QUIET) <= 1, order[:5]
    assert len(order) == FLOW_QUEUE_DATAGRAMS  # 63 flood datagrams left + the ping


def test_fairqueue_flow_queue_bounded_drops_counted() -> None:
    """A flow's queue holds FLOW_QUEUE_DATAGRAMS; the rest is dropped and counted per proxy."""
    queue = FairQueue()
    counters = ProxyCounters()
    queue.open_flow(FLOOD, counters)
    accepted = sum(queue.push(FLOOD, bytes(1400)) for _ in range(FLOW_QUEUE_DATAGRAMS + 36))
    assert accepted == FLOW_QUEUE_DATAGRAMS
    assert queue.queue_length(FLOOD) == FLOW_QUEUE_DATAGRAMS
    assert counters.dropped_datagrams == 36 == queue.dropped
    assert queue.push(QUIET, b"still room for another flow")


def test_fairqueue_total_bytes_bounded() -> None:
    """All flows together stay within total_limit_bytes, however many flows there are."""
    queue = FairQueue(total_limit_bytes=10_000)
    results = [queue.push(flow, bytes(1000)) for flow in range(50)]
    assert results.count(True) == 10
    assert queue.queued_bytes == 10_000


def test_fairqueue_shares_bytes_not_datagrams() -> None:
    """Small and large datagrams get about the same bytes per round (deficit round robin)."""
    queue = FairQueue(flow_limit=10_000, total_limit_bytes=1 << 30, quantum=1500)
    for _ in range(2000):
        queue.push(FLOOD, bytes(1400))
        queue.push(QUIET, bytes(100))
    sent = {FLOOD: 0, QUIET: 0}
    for _ in range(600):
        item = queue.pop()
        assert item is not None
        sent[item[0]] += len(item[1])
    assert 0.8 < sent[FLOOD] / sent[QUIET] < 1.25, sent


def test_fairqueue_large_datagram_waits_rounds_not_forever() -> None:
    """A datagram larger than one quantum is sent after a bounded number of rounds."""
    queue = FairQueue(quantum=1000)
    queue.push(FLOOD, bytes(5000))
    item = queue.pop()
    assert item is not None and len(item[1]) == 5000
    assert queue.pop() is None


def test_fairqueue_closed_flow_forgotten() -> None:
    """Closing a flow drops its queue and its place in the round."""
    queue = FairQueue()
    for _ in range(5):
        queue.push(FLOOD, bytes(100))
    queue.push(QUIET, b"ping")
    queue.close_flow(FLOOD)
    assert drain(queue) == [(QUIET, b"ping")]
    assert queue.queued_bytes == 0


def test_fairqueue_refuses_exactly_what_push_would_drop() -> None:
    """`refuses` says True (and counts the drop) only when push would drop, per flow and total."""
    queue = FairQueue(total_limit_bytes=100_000)
    counters = ProxyCounters()
    queue.open_flow(FLOOD, counters)
    for _ in range(FLOW_QUEUE_DATAGRAMS):
        assert not queue.refuses(FLOOD, 1000)
        assert queue.push(FLOOD, bytes(1000))
    assert queue.refuses(FLOOD, 1000)
    assert counters.dropped_datagrams == 1 == queue.dropped
    queue.open_flow(QUIET)
    assert not queue.refuses(QUIET, 1000)  # another flow still has room
    too_big = 100_000 - queue.queued_bytes + 1
    assert queue.refuses(QUIET, too_big)  # but not past the total
    assert not queue.push(QUIET, bytes(too_big))


def test_fairqueue_pop_run_gives_the_same_order_as_pop() -> None:
    """Runs, concatenated, are exactly what pop() would give, and a run never mixes flows."""
    sizes = [1400, 300, 1400, 1400, 60, 1400]
    queues = [FairQueue(), FairQueue()]
    for queue in queues:
        for i, size in enumerate(sizes * 5):
            queue.push(FLOOD, b"f%02d" % i + bytes(size))
            if i % 7 == 0:
                queue.push(QUIET, b"q%02d" % i)
    expected = drain(queues[0])
    got: list[tuple[int, bytes]] = []
    while (run := queues[1].pop_run(32, 32 * 1024)) is not None:
        flow_id, datagrams, _ = run
        got.extend((flow_id, data) for data in datagrams)
    assert got == expected


def test_fairqueue_pop_run_alone_flow_runs_within_its_bounds() -> None:
    """A flow alone in the ring gives runs of at most max_count and max_bytes (lengths counted)."""
    queue = FairQueue()
    for _ in range(FLOW_QUEUE_DATAGRAMS):
        queue.push(FLOOD, bytes(1000))
    run = queue.pop_run(10, 1 << 20)
    assert run is not None and len(run[1]) == 10
    run = queue.pop_run(32, 3 * 1002)
    assert run is not None and len(run[1]) == 3
    run = queue.pop_run(32, 10)  # the first datagram always goes, even over max_bytes
    assert run is not None and len(run[1]) == 1


def test_fairqueue_pop_run_ends_at_another_flows_turn() -> None:
    """With a quiet flow waiting, the flood's run ends with its turn: the ping is next."""
    queue = FairQueue()
    for _ in range(20):
        queue.push(FLOOD, bytes(1400))
    queue.push(QUIET, b"ping")
    first = queue.pop_run(32, 32 * 1024)
    second = queue.pop_run(32, 32 * 1024)
    assert first is not None and first[0] == FLOOD and len(first[1]) == 1
    assert second is not None and second[0] == QUIET and second[1] == [b"ping"]
    rest = queue.pop_run(32, 32 * 1024)
    assert rest is not None and rest[0] == FLOOD and len(rest[1]) == 19


def test_fairqueue_pack_bounds_hold_for_full_and_tiny_datagrams() -> None:
    """With the drain's bounds a run packs to at most PACK_MAX_BYTES and PACKED_MAX_DATAGRAMS,
    whether the datagrams are full-size (bytes bind) or tiny (the count binds)."""
    for size, bound in ((1400, "bytes"), (10, "count")):
        queue = FairQueue()
        for _ in range(FLOW_QUEUE_DATAGRAMS):
            queue.push(FLOOD, bytes(size))
        run = queue.pop_run(PACKED_MAX_DATAGRAMS, PACK_MAX_BYTES)
        assert run is not None
        payload = pack_datagrams(run[1])
        assert len(payload) <= PACK_MAX_BYTES and len(run[1]) <= PACKED_MAX_DATAGRAMS
        if bound == "bytes":
            assert len(payload) + DATAGRAM_LENGTH_BYTES + size > PACK_MAX_BYTES  # full
        else:
            assert len(run[1]) == PACKED_MAX_DATAGRAMS


def test_fairqueue_on_room_fires_once_at_half_full() -> None:
    """A waiter on a full queue is called once, when the queue has drained to half, not before."""
    queue = FairQueue()
    calls: list[int] = []
    assert not queue.on_room(FLOOD, lambda: calls.append(1))  # no such flow: refused
    for _ in range(FLOW_QUEUE_DATAGRAMS - 1):
        queue.push(FLOOD, bytes(100))
    assert not queue.is_full(FLOOD)
    assert not queue.on_room(FLOOD, lambda: calls.append(1))  # not full: refused
    queue.push(FLOOD, bytes(100))
    assert queue.is_full(FLOOD)
    assert queue.on_room(FLOOD, lambda: calls.append(1))
    while queue.queue_length(FLOOD) > FLOW_QUEUE_DATAGRAMS // 2 + 1:
        assert queue.pop() is not None
        assert calls == []
    assert queue.pop() is not None
    assert calls == [1]
    drain(queue)
    assert calls == [1]


def test_fairqueue_on_room_fires_when_flow_closed() -> None:
    """A waiter on a full queue is called when its flow closes, so a paused reader resumes."""
    queue = FairQueue()
    calls: list[int] = []
    for _ in range(FLOW_QUEUE_DATAGRAMS):
        queue.push(FLOOD, bytes(100))
    assert queue.on_room(FLOOD, lambda: calls.append(1))
    queue.close_flow(FLOOD)
    assert calls == [1]
    assert not queue.is_full(FLOOD)
