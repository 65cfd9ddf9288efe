"""SMPP 3.4 time fields (§7.1.1): schedule_delivery_time and validity_period.

Absolute: ``YYMMDDhhmmsstnnp`` — t tenths of a second, nn the offset from UTC in quarter hours
(00–48), p ``+`` (ahead of UTC) or ``-`` (behind). Relative: ``YYMMDDhhmmss000R`` — an amount
of years, months, days, hours, minutes and seconds from now. An empty string means "not set".
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

from .errors import LocalProtocolError

__all__ = ["RelativeTime", "SmppTimeError", "format_time", "parse_time"]


class SmppTimeError(LocalProtocolError, ValueError):
    """A time field that SMPP 3.4 §7.1.1 does not allow, or a value it cannot carry."""


@dataclass(frozen=True, slots=True)
class RelativeTime:
    """A relative time: calendar years and months, then days and a clock duration."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        for name, top in (
            ("years", 99),
            ("months", 99),
            ("days", 99),
            ("hours", 99),
            ("minutes", 99),
            ("seconds", 99),
        ):
            value = getattr(self, name)
            if not 0 <= value <= top:
                raise SmppTimeError(f"relative {name} must be 0..{top}, got {value}")

    @classmethod
    def from_timedelta(cls, delta: dt.timedelta) -> RelativeTime:
        """Days, hours, minutes and whole seconds of ``delta`` (no calendar units)."""
        if delta < dt.timedelta(0):
            raise SmppTimeError("a relative time cannot be negative")
        minutes, seconds = divmod(int(delta.total_seconds()), 60)
        hours, minutes = divmod(minutes, 60)
        days, hours = divmod(hours, 24)
        return cls(days=days, hours=hours, minutes=minutes, seconds=seconds)

    def after(self, now: dt.datetime) -> dt.datetime:
        """The instant this long after ``now``: months and years move the calendar date
        (31 January + 1 month is the last day of February), the rest is a fixed duration."""
        month_index = now.month - 1 + self.months + 12 * self.years
        year, month = now.year + month_index // 12, month_index % 12 + 1
        day = min(now.day, calendar.monthrange(year, month)[1])
        moved = now.replace(year=year, month=month, day=day)
        return moved + dt.timedelta(
            days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds
        )


def _digits(text: str, start: int, end: int) -> int:
    part = text[start:end]
    if not part.isdigit() or not part.isascii():
        raise SmppTimeError(f"time field {text!r}: {part!r} is not digits")
    return int(part)


def parse_time(text: str) -> dt.datetime | RelativeTime | None:
    """Parse a time field: an aware datetime, a :class:`RelativeTime`, or None when empty.

    Raises:
        SmppTimeError: not 16 characters of the §7.1.1 form, or an impossible date.
    """
    if text == "":
        return None
    if len(text) != 16:
        raise SmppTimeError(f"time field {text!r} must be 16 characters, got {len(text)}")
    kind = text[15]
    fields = [_digits(text, i, i + 2) for i in range(0, 12, 2)]
    if kind == "R":
        if text[12:15] != "000":
            raise SmppTimeError(f"relative time {text!r} must have 000 before R")
        return RelativeTime(*fields)
    if kind not in "+-":
        raise SmppTimeError(f"time field {text!r} must end in +, - or R")
    tenths = _digits(text, 12, 13)
    quarters = _digits(text, 13, 15)
    if quarters > 48:
        raise SmppTimeError(f"time field {text!r}: UTC offset {quarters} quarter hours > 48")
    offset = dt.timedelta(minutes=15 * quarters) * (1 if kind == "+" else -1)
    year, month, day, hour, minute, second = fields
    try:
        return dt.datetime(
            2000 + year, month, day, hour, minute, second, tenths * 100_000, dt.timezone(offset)
        )
    except ValueError as exc:
        raise SmppTimeError(f"time field {text!r}: {exc}") from None


def format_time(value: dt.datetime | RelativeTime | dt.timedelta | None) -> str:
    """Format a time field; tenths of a second are truncated.

    Raises:
        SmppTimeError: a naive datetime, a year outside 2000–2099, or a UTC offset that is not
            a whole number of quarter hours.
    """
    if value is None:
        return ""
    if isinstance(value, dt.timedelta):
        value = RelativeTime.from_timedelta(value)
    if isinstance(value, RelativeTime):
        units = (value.years, value.months, value.days, value.hours, value.minutes, value.seconds)
        return "".join(f"{unit:02d}" for unit in units) + "000R"
    offset = value.utcoffset()
    if offset is None:
        raise SmppTimeError("an absolute SMPP time needs a timezone-aware datetime")
    if not 2000 <= value.year <= 2099:
        raise SmppTimeError(f"year {value.year} cannot be written as YY")
    quarters, rest = divmod(abs(offset), dt.timedelta(minutes=15))
    if rest or quarters > 48:
        raise SmppTimeError(f"UTC offset {offset} is not a whole number of quarter hours")
    sign = "-" if offset < dt.timedelta(0) else "+"
    return f"{value.strftime('%y%m%d%H%M%S')}{value.microsecond // 100_000}{quarters:02d}{sign}"
