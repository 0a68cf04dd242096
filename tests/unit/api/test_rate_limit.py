"""The per-write-key token bucket, on a clock the test moves."""

from __future__ import annotations

import pytest

from streams.api.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_fresh_key_may_spend_its_burst_at_once(clock: Clock) -> None:
    limiter = RateLimiter(10, burst=20, clock=clock)
    assert limiter.take("k", 20) == 0.0
    assert limiter.take("k", 1) == pytest.approx(0.1)


def test_tokens_come_back_at_the_rate_up_to_the_burst(clock: Clock) -> None:
    limiter = RateLimiter(10, burst=20, clock=clock)
    assert limiter.take("k", 20) == 0.0
    clock.now += 0.5
    assert limiter.take("k", 5) == 0.0
    assert limiter.take("k", 1) == pytest.approx(0.1)
    clock.now += 3600
    assert limiter.take("k", 20) == 0.0
    assert limiter.take("k", 1) > 0


def test_a_refused_request_spends_nothing(clock: Clock) -> None:
    limiter = RateLimiter(10, burst=20, clock=clock)
    assert limiter.take("k", 15) == 0.0
    assert limiter.take("k", 10) == pytest.approx(0.5)
    assert limiter.take("k", 5) == 0.0


def test_keys_have_their_own_buckets(clock: Clock) -> None:
    limiter = RateLimiter(10, burst=20, clock=clock)
    assert limiter.take("a", 20) == 0.0
    assert limiter.take("a", 1) > 0
    assert limiter.take("b", 20) == 0.0


def test_a_batch_over_the_burst_passes_once_then_the_key_pays_its_debt(clock: Clock) -> None:
    limiter = RateLimiter(10, burst=20, clock=clock)
    assert limiter.take("k", 100) == 0.0
    # 80 calls of debt plus the one asked for, at 10 a second.
    assert limiter.take("k", 1) == pytest.approx(8.1)
    clock.now += 8.1
    assert limiter.take("k", 1) == 0.0


def test_over_a_long_run_a_key_gets_the_rate_plus_one_burst(clock: Clock) -> None:
    limiter = RateLimiter(100, burst=200, clock=clock)
    admitted = 0
    for _ in range(10_000):  # a request of 7 calls every millisecond for 10 s
        if limiter.take("k", 7) == 0.0:
            admitted += 7
        clock.now += 0.001
    assert 1000 <= admitted <= 200 + 100 * 10 + 7


def test_rate_and_burst_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0, burst=10)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1, burst=0.5)
