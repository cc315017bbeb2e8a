"""A bounded ring of captured exchanges, with live-update subscriptions.

Bounds and overflow policies:
- exchanges: at most `max_requests`; adding one more evicts the oldest.
- bodies: at most `max_body_bytes` per body (the capture truncates and flags them).
- subscribers: at most `max_subscribers`; one more is refused with `TooManySubscribers`.
- per-subscriber queue: at most `queue_size` queued events, an exchange's events coalescing
  into its latest; when full, new events for other exchanges are dropped and counted
  (`Subscription.dropped`), so a slow reader never grows memory. The reader sees the count go
  up and re-reads the whole list.

The store is used from one event loop only; it needs no locks.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import logging
from collections import deque
from collections.abc import Iterable
from typing import Final, Literal, NamedTuple, Protocol

from tunnel_client.inspect.exchange import CapturedExchange
from tunnel_client.inspect.mock import MockRules

logger = logging.getLogger(__name__)

DEFAULT_MAX_SUBSCRIBERS: Final = 16
# Distinct exchanges (ids) queued per subscriber, events coalescing per exchange: a live view
# reads at least once a second (app.py's LIVE_VIEW_MAX_WAIT_SECONDS), so it keeps up with
# about 2,000 new requests a second; past that it is told to re-read the list.
DEFAULT_SUBSCRIBER_QUEUE_SIZE: Final = 2048

EventKind = Literal["added", "updated", "cleared", "expired"]


class StoreEvent(NamedTuple):
    """A change in the store; `exchange` is None for "cleared". (A named tuple: one is made
    per change while a viewer listens, and a tuple is the cheapest immutable record.)"""

    kind: EventKind
    exchange: CapturedExchange | None


class HistorySink(Protocol):
    """Where the store reports changes to be persisted (`history.HistoryWriter`)."""

    def mark(self, exchange: CapturedExchange) -> None: ...

    def cleared(self) -> None: ...


class TooManySubscribers(Exception):
    """Raised by `CaptureStore.subscribe` when `max_subscribers` are already listening."""


class Subscription:
    """A bounded, coalescing queue of store events for one reader; close it when done.

    Events for the same exchange coalesce as they are offered: an exchange that changes
    several times before the reader looks is one entry, its latest kind, in the place of
    that latest event (the page upserts an exchange as it is now, so nothing is lost). Events
    without an exchange ("cleared", "expired") keep their place. So a reader that takes a
    batch every few hundred milliseconds costs one entry per changed exchange, not one per
    change, and the bound counts distinct exchanges.

    The queue holds exchange ids, not exchanges: an exchange is looked up when the reader
    takes its event, and one evicted from the store meanwhile is skipped (the list no longer
    has it). Holding evicted exchanges alive until the reader came (tried first) made them
    survive the garbage collector's young generations under load, and the full collections
    that followed cost tunnelc more than the live view itself (bench/inspect_cost_bench.py).
    """

    def __init__(self, store: CaptureStore, queue_size: int) -> None:
        self._store = store
        self._queue_size = queue_size
        # Oldest first: an exchange's id -> its latest kind; a fresh key -> another kind, or
        # None for the end of the subscription.
        self._events: dict[object, EventKind | None] = {}
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, kind: EventKind, exchange: CapturedExchange | None) -> None:
        """Queue an event without blocking; drop and count it when the queue is full."""
        if self._closed:
            return
        events = self._events
        key: object = object() if exchange is None else exchange.id
        if key in events:
            del events[key]  # the latest event takes the latest place
        elif len(events) >= self._queue_size:
            self.dropped += 1
            return
        events[key] = kind
        if len(events) == 1:
            self._ready.set()

    def _take(self, count: int) -> list[StoreEvent | None]:
        """Up to `count` queued events, oldest first, exchanges looked up now."""
        taken: list[StoreEvent | None] = []
        events = self._events
        get = self._store.get
        while events and len(taken) < count:
            key = next(iter(events))
            kind = events.pop(key)
            if kind is None:
                taken.append(None)
            elif isinstance(key, int):
                exchange = get(key)
                if exchange is not None:  # else evicted since: nothing to show
                    taken.append(StoreEvent(kind, exchange))
            else:
                taken.append(StoreEvent(kind, None))
        return taken

    async def get(self) -> StoreEvent | None:
        """Wait for the next event; None once the subscription is closed."""
        while not self._closed:
            if not self._events:
                self._ready.clear()
                await self._ready.wait()
                continue
            taken = self._take(1)
            if taken:
                return taken[0]
        return None

    def drain(self) -> list[StoreEvent | None]:
        """The events already queued, without waiting (at most the queue's size)."""
        return self._take(len(self._events))

    def close(self) -> None:
        """Stop receiving events and wake a waiting `get` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._store.unsubscribe(self)
        self._events[object()] = None  # after the events already queued
        self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CaptureStore:
    """The newest `max_requests` exchanges, looked up by id, with live subscriptions."""

    def __init__(
        self,
        max_requests: int,
        max_body_bytes: int,
        *,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        queue_size: int = DEFAULT_SUBSCRIBER_QUEUE_SIZE,
    ) -> None:
        if max_requests < 1:
            raise ValueError(f"inspect.maxRequests must be at least 1, got {max_requests}")
        if max_body_bytes < 0:
            raise ValueError(f"inspect.maxBodyBytes must not be negative, got {max_body_bytes}")
        self.max_requests: Final = max_requests
        self.max_body_bytes: Final = max_body_bytes
        self._max_subscribers = max_subscribers
        self._queue_size = queue_size
        self._ring: deque[CapturedExchange] = deque(maxlen=max_requests)
        self._by_id: dict[int, CapturedExchange] = {}
        self._ids = itertools.count(1)
        self.last_id = 0  # the newest id handed out
        self._subscribers: set[Subscription] = set()
        self.dropped_events = 0  # summed over all subscribers, for the logs
        self.history: HistorySink | None = None  # set while history is written to disk
        self.mocks = MockRules()  # mock/catch rules, shared by the proxies and the page

    def __len__(self) -> int:
        return len(self._ring)

    def new_id(self) -> int:
        """Return a fresh exchange id (ids only grow, also across `clear`)."""
        self.last_id = next(self._ids)
        return self.last_id

    def add(self, exchange: CapturedExchange) -> None:
        """Store `exchange`, evicting the oldest one when full, and tell subscribers."""
        if exchange.id in self._by_id:
            self.update(exchange)
            return
        if len(self._ring) == self.max_requests:
            evicted = self._ring[0]
            self._by_id.pop(evicted.id, None)
        self._ring.append(exchange)  # the deque drops the oldest by itself
        self._by_id[exchange.id] = exchange
        if self.history is not None:
            self.history.mark(exchange)
        if self._subscribers:
            self._publish("added", exchange)

    def update(self, exchange: CapturedExchange) -> None:
        """Tell subscribers that a stored exchange changed (ignored once it was evicted)."""
        if self._by_id.get(exchange.id) is exchange:
            if self.history is not None:
                self.history.mark(exchange)
            if self._subscribers:
                self._publish("updated", exchange)

    def restore(self, exchanges: Iterable[CapturedExchange], *, next_id: int) -> None:
        """Load saved exchanges (oldest first) without telling anyone; new ids start at
        `next_id` or later."""
        for exchange in exchanges:
            if len(self._ring) == self.max_requests:
                self._by_id.pop(self._ring[0].id, None)
            self._ring.append(exchange)
            self._by_id[exchange.id] = exchange
            next_id = max(next_id, exchange.id + 1)
        self._ids = itertools.count(next_id)
        self.last_id = next_id - 1

    def expire(self, min_started_at: float) -> int:
        """Forget exchanges that started before `min_started_at`; returns how many."""
        expired = 0
        while self._ring and self._ring[0].started_at < min_started_at:
            self._by_id.pop(self._ring.popleft().id, None)
            expired += 1
        if expired:
            self._publish("expired", None)  # viewers re-read the list
        return expired

    def list(self) -> builtins.list[CapturedExchange]:
        """Return the stored exchanges, newest first."""
        return builtins.list(reversed(self._ring))

    def get(self, exchange_id: int) -> CapturedExchange | None:
        return self._by_id.get(exchange_id)

    def clear(self) -> None:
        """Forget every exchange and tell subscribers."""
        self._ring.clear()
        self._by_id.clear()
        if self.history is not None:
            self.history.cleared()
        self._publish("cleared", None)

    def subscribe(self) -> Subscription:
        """Start receiving events; raises TooManySubscribers at the bound."""
        if len(self._subscribers) >= self._max_subscribers:
            raise TooManySubscribers(
                f"the inspector already has {self._max_subscribers} live viewers"
            )
        subscription = Subscription(self, self._queue_size)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close_subscriptions(self) -> None:
        """Close every subscription, waking their readers (used at shutdown)."""
        for subscription in builtins.list(self._subscribers):
            subscription.close()

    def _publish(self, kind: EventKind, exchange: CapturedExchange | None) -> None:
        for subscription in self._subscribers:
            before = subscription.dropped
            subscription.offer(kind, exchange)
            if subscription.dropped != before:
                self.dropped_events += 1
