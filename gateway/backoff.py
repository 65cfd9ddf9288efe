"""Jittered exponential backoff for reconnects, with an injected random source."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with "full jitter" up to a cap.

    Delay n (0-based) is drawn uniformly from ``[initial * multiplier**n * (1 - jitter),
    initial * multiplier**n]``, capped at ``maximum``. Jitter spreads the reconnects of many
    binds after an SMSC restart, so they do not arrive as one storm.
    """

    __slots__ = ("_attempt", "_initial", "_jitter", "_maximum", "_multiplier", "_rng")

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        *,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial}, {maximum}")
        if multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {multiplier}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {jitter}")
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays have been handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        """The delay before the next attempt; each call moves one step up."""
        # Cap the exponent before computing the power so a long outage cannot overflow.
        ceiling = self._initial
        for _ in range(self._attempt):
            ceiling *= self._multiplier
            if ceiling >= self._maximum:
                break
        ceiling = min(ceiling, self._maximum)
        self._attempt += 1
        low = ceiling * (1.0 - self._jitter)
        return self._rng.uniform(low, ceiling)

    def reset(self) -> None:
        """Start again from ``initial`` (after a bind that stayed up)."""
        self._attempt = 0
