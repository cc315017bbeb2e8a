"""Reconnect delays: exponential with full jitter, capped (pure; the caller sleeps)."""

from __future__ import annotations

import random
from typing import Final

BACKOFF_BASE_S: Final = 0.5
BACKOFF_CAP_S: Final = 10.0


class Backoff:
    """delay(n) = uniform(base, min(cap, base * 2**n)); `reset()` after a good session."""

    def __init__(
        self,
        base_s: float = BACKOFF_BASE_S,
        cap_s: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(self.base_s, ceiling)

    def reset(self) -> None:
        self.attempt = 0
