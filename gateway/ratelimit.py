"""Rate control with an injected clock: a token bucket and an adaptive (AIMD) rate.

Both take ``now`` (monotonic seconds) on every call and never read the clock themselves, so
tests move time by hand and the trio layer decides how to sleep.
"""

from __future__ import annotations

__all__ = ["AdaptiveRate", "TokenBucket"]


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` banked.

    The bucket starts full. ``rate`` may be changed at any time (the adaptive throttle does);
    tokens earned so far are kept.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def set_rate(self, rate: float, now: float) -> None:
        """Change the refill rate; tokens earned at the old rate up to ``now`` are kept."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._refill(now)
        self._rate = float(rate)

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._stamp = now

    def available(self, now: float) -> float:
        """Tokens that could be taken at ``now``."""
        self._refill(now)
        return self._tokens

    def try_take(self, now: float, count: float = 1.0) -> bool:
        """Take ``count`` tokens if they are there; return whether it did."""
        self._refill(now)
        if self._tokens >= count:
            self._tokens -= count
            return True
        return False

    def take_up_to(self, now: float, count: int) -> int:
        """Take as many whole tokens as are available, at most ``count``; return how many."""
        self._refill(now)
        taken = min(count, int(self._tokens))
        if taken > 0:
            self._tokens -= taken
        return taken

    def delay_until(self, now: float, count: float = 1.0) -> float:
        """Seconds from ``now`` until ``count`` tokens will be there (0 if they are now)."""
        self._refill(now)
        missing = count - self._tokens
        return 0.0 if missing <= 0 else missing / self._rate


class AdaptiveRate:
    """Additive-increase / multiplicative-decrease of a send rate under SMSC throttling.

    An SMSC says "slow down" with ESME_RTHROTTLED (0x58) or ESME_RMSGQFUL (0x14) in a
    submit_sm_resp. A whole window of responses may carry that answer at once, so the rate is
    cut at most once per ``decrease_hold_s``: one congestion event, one cut. Afterwards it climbs
    back by ``increase_step`` of the ceiling every ``increase_interval_s`` without throttling.
    """

    __slots__ = (
        "_ceiling",
        "_decrease_factor",
        "_decrease_hold_s",
        "_floor",
        "_increase_interval_s",
        "_increase_step",
        "_last_change",
        "_last_decrease",
        "_rate",
        "throttle_events",
    )

    def __init__(
        self,
        ceiling: float,
        now: float,
        *,
        floor: float = 1.0,
        decrease_factor: float = 0.5,
        decrease_hold_s: float = 1.0,
        increase_step: float = 0.05,
        increase_interval_s: float = 1.0,
    ) -> None:
        if ceiling <= 0 or floor <= 0 or floor > ceiling:
            raise ValueError(f"need 0 < floor <= ceiling, got floor={floor} ceiling={ceiling}")
        if not 0 < decrease_factor < 1:
            raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor}")
        if increase_step <= 0 or increase_interval_s <= 0 or decrease_hold_s < 0:
            raise ValueError("increase_step and increase_interval_s must be positive")
        self._ceiling = float(ceiling)
        self._floor = float(floor)
        self._decrease_factor = decrease_factor
        self._decrease_hold_s = decrease_hold_s
        self._increase_step = increase_step * ceiling
        self._increase_interval_s = increase_interval_s
        self._rate = float(ceiling)
        self._last_change = now
        self._last_decrease = float("-inf")
        self.throttle_events = 0

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def ceiling(self) -> float:
        return self._ceiling

    def on_throttled(self, now: float) -> bool:
        """Record a throttling answer; return True if it cut the rate."""
        self.throttle_events += 1
        if now - self._last_decrease < self._decrease_hold_s:
            return False
        self._rate = max(self._floor, self._rate * self._decrease_factor)
        self._last_decrease = now
        self._last_change = now
        return True

    def update(self, now: float) -> float:
        """Raise the rate for every quiet interval since the last change; return the rate."""
        if self._rate >= self._ceiling:
            self._last_change = now
            return self._rate
        steps = int((now - self._last_change) / self._increase_interval_s)
        if steps > 0:
            self._rate = min(self._ceiling, self._rate + steps * self._increase_step)
            self._last_change += steps * self._increase_interval_s
        return self._rate
