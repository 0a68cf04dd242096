"""The collector's rate limit per write key: one token bucket per key, pure (the clock is passed in)."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Each key earns ``rate_per_s`` tokens a second and holds at most ``burst`` of them.

    A request costing ``cost`` tokens is admitted when the key holds ``min(cost, burst)`` tokens, and
    then spends all of ``cost``: a batch larger than the burst is admitted from a full bucket and leaves
    it in debt, which the key pays off before its next request. So over any span of ``t`` seconds a key
    gets at most ``burst + rate_per_s * t`` calls through, plus one request's cost.

    Only authenticated write keys are passed in, so the table holds at most one bucket per configured
    key. Not thread-safe: the collector calls it from its event loop only.
    """

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"the rate must be positive, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"the burst must be at least 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def take(self, key: str, cost: int) -> float:
        """Spend ``cost`` of ``key``'s tokens and return 0.0, or spend nothing and return the seconds
        until the request would be admitted."""
        now = self._clock()
        tokens, counted_at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - counted_at) * self.rate_per_s)
        needed = min(float(cost), self.burst)
        if tokens < needed:
            self._buckets[key] = (tokens, now)
            return (needed - tokens) / self.rate_per_s
        self._buckets[key] = (tokens - cost, now)
        return 0.0
