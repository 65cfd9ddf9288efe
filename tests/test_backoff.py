from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.backoff import Backoff


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


@given(seed=st.integers(0, 2**32), jitter=st.floats(0, 1), attempts=st.integers(1, 80))
def test_jittered_delays_stay_within_their_band(seed: int, jitter: float, attempts: int) -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, jitter=jitter, rng=random.Random(seed))
    for n in range(attempts):
        ceiling = min(30.0, 0.5 * 2.0**n)
        delay = backoff.next_delay()
        assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling + 1e-9


def test_jitter_spreads_many_binds() -> None:
    rng = random.Random(7)
    firsts = {round(Backoff(initial=2.0, jitter=0.5, rng=rng).next_delay(), 3) for _ in range(50)}
    assert len(firsts) > 40


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=5, maximum=1)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)
