"""CaptureStore: a bounded ring of exchanges with bounded live subscriptions."""

import asyncio

import pytest

from tunnel_client.inspect.exchange import CapturedExchange
from tunnel_client.inspect.store import CaptureStore, TooManySubscribers


def exchange(store: CaptureStore, path: str = "/") -> CapturedExchange:
    return CapturedExchange(
        id=store.new_id(),
        proxy="web",
        started_at=0.0,
        method="GET",
        path=path,
        http_version="1.1",
        request_headers=(),
    )


def test_capture_store_keeps_only_the_newest_max_requests() -> None:
    """Adding past max_requests evicts the oldest, from the list and from get()."""
    store = CaptureStore(max_requests=3, max_body_bytes=10)
    added = [exchange(store, f"/{n}") for n in range(5)]
    for item in added:
        store.add(item)
    assert [item.path for item in store.list()] == ["/4", "/3", "/2"]
    assert store.get(added[0].id) is None and store.get(added[1].id) is None
    assert store.get(added[4].id) is added[4]
    assert len(store) == 3


def test_capture_store_clear_forgets_everything_but_ids_keep_growing() -> None:
    """clear() empties the store; new ids never reuse old ones."""
    store = CaptureStore(max_requests=3, max_body_bytes=10)
    first = exchange(store)
    store.add(first)
    store.clear()
    assert store.list() == [] and store.get(first.id) is None
    assert store.new_id() > first.id


def test_capture_store_rejects_bad_bounds() -> None:
    """Non-positive limits are configuration errors with the key name."""
    with pytest.raises(ValueError, match="maxRequests"):
        CaptureStore(max_requests=0, max_body_bytes=10)
    with pytest.raises(ValueError, match="maxBodyBytes"):
        CaptureStore(max_requests=1, max_body_bytes=-1)


async def test_capture_store_slow_subscriber_drops_and_counts() -> None:
    """A subscriber that does not read keeps at most queue_size events and counts the rest."""
    async with asyncio.timeout(5):
        store = CaptureStore(max_requests=100, max_body_bytes=10, queue_size=4)
        with store.subscribe() as slow, store.subscribe() as fast:
            received = 0
            for n in range(10):
                store.add(exchange(store, f"/{n}"))
                event = await fast.get()
                assert event is not None and event.kind == "added"
                received += 1
            assert received == 10
            assert slow.dropped == 6 and fast.dropped == 0
            assert store.dropped_events == 6
            first = await slow.get()
            assert first is not None and first.exchange is not None
            assert first.exchange.path == "/0"


async def test_capture_store_update_of_evicted_exchange_is_silent() -> None:
    """Updating an exchange that was already evicted sends no event."""
    async with asyncio.timeout(5):
        store = CaptureStore(max_requests=1, max_body_bytes=10)
        old, new = exchange(store), exchange(store)
        store.add(old)
        store.add(new)
        with store.subscribe() as subscription:
            store.update(old)
            store.update(new)
            event = await subscription.get()
            assert event is not None and event.kind == "updated" and event.exchange is new


async def test_capture_store_subscriber_limit_and_close_wakes_reader() -> None:
    """At most max_subscribers listen; closing one wakes its waiting reader with None."""
    async with asyncio.timeout(5):
        store = CaptureStore(max_requests=10, max_body_bytes=10, max_subscribers=1)
        subscription = store.subscribe()
        with pytest.raises(TooManySubscribers):
            store.subscribe()
        waiter = asyncio.create_task(subscription.get())
        await asyncio.sleep(0)
        store.close_subscriptions()
        assert await waiter is None
        assert subscription.closed
        store.subscribe().close()  # the slot is free again


async def test_capture_store_clear_is_an_event() -> None:
    """Subscribers are told when the store is cleared."""
    async with asyncio.timeout(5):
        store = CaptureStore(max_requests=10, max_body_bytes=10)
        with store.subscribe() as subscription:
            store.clear()
            event = await subscription.get()
            assert event is not None and (event.kind, event.exchange) == ("cleared", None)


async def test_capture_store_subscription_coalesces_per_exchange() -> None:
    """An exchange's events queued together are one entry, its latest, in the latest place;
    the bound counts distinct exchanges, not changes; an exchange gone from the store before
    the reader came is skipped, and a clear keeps its place."""
    async with asyncio.timeout(5):
        store = CaptureStore(max_requests=10, max_body_bytes=10, queue_size=2)
        first, second, third = exchange(store, "/a"), exchange(store, "/b"), exchange(store)
        with store.subscribe() as subscription:
            store.add(first)
            store.add(second)
            for _ in range(50):  # many changes of queued exchanges: nothing dropped
                store.update(first)
                store.update(second)
            assert subscription.dropped == 0
            store.add(third)  # a third exchange is over the bound: dropped and counted
            assert subscription.dropped == 1
            events = [await subscription.get(), *subscription.drain()]
            assert [(e.kind, e.exchange) for e in events if e is not None] == [
                ("updated", first),
                ("updated", second),
            ]
            late = exchange(store, "/late")
            store.add(late)
            store.clear()  # before the reader came: the exchange is gone, the clear stays
            events = [await subscription.get(), *subscription.drain()]
            assert [(e.kind, e.exchange) for e in events if e is not None] == [("cleared", None)]
