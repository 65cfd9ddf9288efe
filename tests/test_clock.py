"""The simulator's clock: it never sleeps past a deadline because of epoll's rounding."""

from __future__ import annotations

import math

import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import PreciseClock


@given(st.floats(min_value=-1.0, max_value=3600.0))
def test_sleep_time_never_rounds_past_the_deadline(ahead: float) -> None:
    clock = PreciseClock()
    now = clock.current_time()
    sleep = clock.deadline_to_sleep_time(now + ahead)
    assert sleep >= 0.0
    assert sleep <= max(ahead, 0.0)
    # epoll_wait takes whole milliseconds (CPython rounds up): what we ask for must be whole.
    millis = sleep * 1000.0
    assert math.isclose(millis, round(millis), abs_tol=1e-6)
    if ahead < 0.0015:
        assert sleep == 0.0  # the last stretch is polled, not slept


def test_far_deadlines_sleep_long() -> None:
    clock = PreciseClock()
    assert clock.deadline_to_sleep_time(math.inf) == math.inf


def test_trio_runs_on_it_and_sleeps_are_never_short() -> None:
    async def main() -> float:
        start = trio.current_time()
        await trio.sleep(0.005)
        return trio.current_time() - start

    assert trio.run(main, clock=PreciseClock()) >= 0.005
