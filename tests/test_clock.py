"""The simulator's clock: it never sleeps past a deadline because of epoll's rounding, and
with its timerfd watched it does so without polling."""

from __future__ import annotations

import math

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import PreciseClock


@given(st.floats(min_value=-1.0, max_value=3600.0))
def test_polling_sleep_time_never_rounds_past_the_deadline(ahead: float) -> None:
    clock = PreciseClock(use_timerfd=False)
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
    for clock in (PreciseClock(), PreciseClock(use_timerfd=False)):
        assert clock.deadline_to_sleep_time(math.inf) == math.inf


class _CountingClock(PreciseClock):
    """Counts how often trio asked how long to sleep: each ask is one pass of its run loop."""

    def __init__(self, *, use_timerfd: bool) -> None:
        super().__init__(use_timerfd=use_timerfd)
        self.asks = 0

    def deadline_to_sleep_time(self, deadline: float) -> float:
        self.asks += 1
        return super().deadline_to_sleep_time(deadline)


def _sleep_on(clock: PreciseClock, sleeps: int, each_s: float) -> list[float]:
    async def main() -> list[float]:
        slept = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(clock.watch)
            await trio.sleep(0)  # let the watcher start
            for _ in range(sleeps):
                start = trio.current_time()
                await trio.sleep(each_s)
                slept.append(trio.current_time() - start)
            nursery.cancel_scope.cancel()
        return slept

    return trio.run(main, clock=clock)


@pytest.mark.parametrize("use_timerfd", [True, False])
def test_trio_runs_on_it_and_sleeps_are_never_short(use_timerfd: bool) -> None:
    slept = _sleep_on(PreciseClock(use_timerfd=use_timerfd), 5, 0.005)
    assert min(slept) >= 0.005


def test_the_timerfd_wakes_trio_without_polling() -> None:
    # Ulak runs on Linux (the Dockerfile's base); there the timerfd must be in use.
    timerfd = _CountingClock(use_timerfd=True)
    assert timerfd.uses_timerfd
    _sleep_on(timerfd, 20, 0.004)
    polling = _CountingClock(use_timerfd=False)
    _sleep_on(polling, 20, 0.004)
    # Polling asks on every pass through the last stretch of each sleep (many passes); the
    # timerfd clock blocks once per sleep and is woken by the timer.
    assert timerfd.asks <= 20 * 3
    assert polling.asks > 20 * 10


def test_unwatched_it_falls_back_to_polling() -> None:
    clock = PreciseClock()
    now = clock.current_time()
    # Nobody watches the timerfd yet, so it must not be relied on: whole milliseconds.
    assert clock.deadline_to_sleep_time(now + 0.0012) == 0.0
