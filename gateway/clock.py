"""A trio clock whose timers fire on time rather than up to a millisecond late.

trio sleeps in ``epoll_wait``, whose timeout is whole milliseconds; CPython rounds the
remaining time *up*, so every timer fires 0–1 ms after its deadline (0.5 ms on average). For
the SMSC simulator that is a systematic error on the round trip it models: a 10 ms RTT came out
near 11 ms.

On Linux this clock arms a ``timerfd`` (nanosecond resolution, ``CLOCK_MONOTONIC``, the clock
trio reads) for the next deadline and lets trio watch it with everything else, so
``epoll_wait`` returns when the deadline passes, give or take the kernel's wake-up latency,
without polling. Elsewhere it falls back to asking for whole milliseconds rounded *down* and
polling through the last fraction (a short busy wait per timer).

Start :meth:`PreciseClock.watch` in the run (``nursery.start_soon(clock.watch)``); without it
timers fire as late as on trio's own clock, never early.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
from time import monotonic

import trio

__all__ = ["PreciseClock"]

_WAKE_LATENCY_S = 0.0005  # polling fallback: the kernel (on a VM) wakes ~0.1–0.3 ms late
_POLL_S = 0.0015
_CLOCK_MONOTONIC = 1  # <time.h>; time.monotonic reads this clock on Linux
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = 0o2000000  # O_CLOEXEC on Linux


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _TimerFd:
    """A one-shot ``timerfd`` on CLOCK_MONOTONIC, armed at absolute times (libc via ctypes:
    ``os.timerfd_create`` arrives only in Python 3.13)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
        fd = int(libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._spec = _Itimerspec()

    def arm(self, deadline: float) -> None:
        seconds = math.floor(deadline)
        value = self._spec.it_value
        value.tv_sec = seconds
        value.tv_nsec = min(999_999_999, max(1, int((deadline - seconds) * 1e9)))
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def consume(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)


def _timer_fd() -> _TimerFd | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _TimerFd()
    except (OSError, AttributeError):
        return None


class PreciseClock(trio.abc.Clock):
    """Monotonic clock whose sleeps end at their deadline (see the module docstring).

    Args:
        use_timerfd: False forces the polling fallback (tests compare the two).
    """

    def __init__(self, *, use_timerfd: bool = True) -> None:
        self._timer = _timer_fd() if use_timerfd else None
        self._armed = math.inf
        self._watched = False

    @property
    def uses_timerfd(self) -> bool:
        return self._timer is not None

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return monotonic()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        remaining = deadline - monotonic()
        if remaining <= 0.0:
            return 0.0
        if remaining >= 86_400.0:
            return remaining
        if self._timer is not None and self._watched:
            if deadline != self._armed:
                self._timer.arm(deadline)
                self._armed = deadline
            return remaining  # epoll's own timeout rounds up; the timerfd wakes it on time
        if remaining < _POLL_S:
            return 0.0  # poll without blocking through the last stretch
        return math.floor((remaining - _WAKE_LATENCY_S) * 1000.0) / 1000.0

    async def watch(self) -> None:
        """Let trio's ``epoll_wait`` see the timer (run for as long as the clock is used)."""
        timer = self._timer
        if timer is None:
            await trio.sleep_forever()
            return
        self._watched = True
        try:
            while True:
                await trio.lowlevel.wait_readable(timer.fd)
                timer.consume()
                self._armed = math.inf
        finally:
            self._watched = False
