from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ratelimit import AdaptiveRate, TokenBucket


def test_bucket_starts_full_and_refills_at_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert bucket.take_up_to(0.0, 100) == 5
    assert not bucket.try_take(0.0)
    assert bucket.delay_until(0.0) == pytest.approx(0.1)
    assert not bucket.try_take(0.05)
    assert bucket.try_take(0.1)
    # Refill never banks more than the burst.
    assert bucket.available(1000.0) == 5


@given(
    rate=st.floats(1, 10_000),
    burst=st.integers(1, 200),
    steps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_bucket_never_grants_more_than_rate_times_time_plus_burst(
    rate: float, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = 0.0
    granted = 0
    for step in steps:
        now += step
        granted += bucket.take_up_to(now, 1_000_000)
    assert granted <= burst + rate * now + 1e-6
    # ... and it grants everything it owes: nothing is left beyond one fractional token.
    assert bucket.available(now) < 1


def test_set_rate_keeps_earned_tokens() -> None:
    bucket = TokenBucket(rate=10, burst=100, now=0.0)
    bucket.take_up_to(0.0, 100)
    bucket.set_rate(1000, now=1.0)  # 10 tokens earned at the old rate
    assert bucket.available(1.0) == pytest.approx(10)
    assert bucket.available(1.01) == pytest.approx(20)


def test_invalid_bucket_arguments() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0, now=0)


def test_one_cut_per_congestion_event_then_gradual_recovery() -> None:
    rate = AdaptiveRate(
        1000,
        now=0.0,
        decrease_factor=0.5,
        decrease_hold_s=1.0,
        increase_step=0.1,
        increase_interval_s=1.0,
    )
    # A whole window of throttled responses arriving together cuts the rate once.
    cuts = [rate.on_throttled(10.0) for _ in range(100)]
    assert cuts.count(True) == 1
    assert rate.rate == 500
    assert rate.throttle_events == 100
    # Still throttled a second later: cut again.
    assert rate.on_throttled(11.0)
    assert rate.rate == 250
    # Quiet: +100/s (10 % of the ceiling) per second, never above the ceiling.
    assert rate.update(11.5) == 250
    assert rate.update(12.0) == 350
    assert rate.update(14.0) == 550
    assert rate.update(100.0) == 1000


def test_rate_never_below_floor() -> None:
    rate = AdaptiveRate(100, now=0.0, floor=5, decrease_hold_s=0)
    for i in range(50):
        rate.on_throttled(float(i))
    assert rate.rate == 5


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 3)), max_size=100))
def test_rate_stays_within_floor_and_ceiling(events: list[tuple[bool, float]]) -> None:
    rate = AdaptiveRate(200, now=0.0, floor=2)
    now = 0.0
    for throttled, step in events:
        now += step
        if throttled:
            rate.on_throttled(now)
        rate.update(now)
        assert 2 <= rate.rate <= 200
