"""SMPP 3.4 time fields (§7.1.1): schedule_delivery_time, validity_period and friends.

A time field is empty ("not set", the C-octet string holds only its NUL) or 16 characters:

- absolute ``YYMMDDhhmmsstnnp`` (§7.1.1.1): local date and time, ``t`` tenths of a second,
  ``nn`` the distance between that local time and UTC in quarter hours (00–48), ``p`` ``+``
  when local time is ahead of UTC and ``-`` when behind;
- relative ``YYMMDDhhmmss000R`` (§7.1.1.2): so many years, months, days, hours, minutes and
  seconds from the current SMSC time. ``t`` and ``nn`` are "ignored and should be" ``000``.

``YY`` is read as 2000 + YY: SMPP 3.4 dates from 1999, and a field naming a past century is of
no use to schedule or expire anything.

Errors split by direction (h11 model): a field the peer sent that §7.1.1 does not allow raises
:class:`InvalidTimeFieldError`, a :class:`~protocols.errors.RemoteProtocolError` carrying the
command_status to answer with; a value of ours that the format cannot carry raises
:class:`UnrepresentableTimeError`, a :class:`~protocols.errors.LocalProtocolError`. Both derive
from :class:`SmppTimeError`, itself a ``ValueError``.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, fields
from typing import Final

from .constants import CommandStatus
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "InvalidTimeFieldError",
    "RelativeTime",
    "SmppTimeError",
    "UnrepresentableTimeError",
    "format_time",
    "parse_time",
    "resolve_time",
]

_FIELD_LENGTH: Final = 16
_QUARTER_HOUR: Final = dt.timedelta(minutes=15)
_MAX_QUARTERS: Final = 48  # §7.1.1: nn is 00-48, i.e. at most 12 hours either side of UTC
_MICROSECONDS_PER_TENTH: Final = 100_000
_MAX_RELATIVE_UNIT: Final = 99  # two decimal digits per unit


class SmppTimeError(ValueError):
    """Base class of every time-field error; catch it to handle both directions at once."""


class InvalidTimeFieldError(RemoteProtocolError, SmppTimeError):
    """The peer sent a time field that SMPP 3.4 §7.1.1 does not allow.

    ``command_status`` is the status to answer with: ESME_RINVSCHED (0x61) for
    schedule_delivery_time, ESME_RINVEXPIRY (0x62) for validity_period (§5.1.3), as chosen by
    the caller of :func:`parse_time`.
    """


class UnrepresentableTimeError(LocalProtocolError, SmppTimeError):
    """We asked for a time that §7.1.1 cannot carry (naive datetime, year outside 2000-2099,
    UTC offset that is not a whole number of quarter hours up to 12 hours, ...)."""


@dataclass(frozen=True, slots=True)
class RelativeTime:
    """A relative time field (§7.1.1.2): an amount of calendar and clock units from "now".

    Each unit is written as two digits, so each is 0–99. Units are counts, not clock readings:
    ``hours=30`` is valid and means thirty hours. Months and years are calendar units and have
    no fixed length, which is why this is not a ``timedelta``; :meth:`after` applies it to a
    given instant.
    """

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or not 0 <= value <= _MAX_RELATIVE_UNIT:
                raise UnrepresentableTimeError(
                    f"relative {field.name} must be an int in 0..{_MAX_RELATIVE_UNIT}, "
                    f"got {value!r}"
                )

    @classmethod
    def from_timedelta(cls, delta: dt.timedelta) -> RelativeTime:
        """The relative time of a fixed duration, in days, hours, minutes and seconds.

        Raises:
            UnrepresentableTimeError: ``delta`` is negative, has a fraction of a second (the
                relative form has no tenths), or is 100 days or longer.
        """
        if delta < dt.timedelta(0):
            raise UnrepresentableTimeError(f"a relative time cannot be negative: {delta}")
        if delta.microseconds:
            raise UnrepresentableTimeError(f"a relative time has whole seconds only: {delta}")
        minutes, seconds = divmod(delta.seconds, 60)
        hours, minutes = divmod(minutes, 60)
        if delta.days > _MAX_RELATIVE_UNIT:
            raise UnrepresentableTimeError(
                f"a relative time holds at most {_MAX_RELATIVE_UNIT} days, got {delta}"
            )
        return cls(days=delta.days, hours=hours, minutes=minutes, seconds=seconds)

    def after(self, now: dt.datetime) -> dt.datetime:
        """The instant this long after ``now`` (naive or aware; the result is alike).

        Years and months move the calendar: 31 January plus one month is the last day of
        February. Days then move the date with the wall clock unchanged (one day from 12:00 is
        12:00 the next day, across a DST change too). Hours, minutes and seconds are elapsed
        time: for an aware ``now`` they are added in UTC, so a DST change in between neither
        stretches nor shrinks them.

        Raises:
            UnrepresentableTimeError: the result falls outside what ``datetime`` can hold.
        """
        month_index = now.month - 1 + self.months + 12 * self.years
        year, month = now.year + month_index // 12, month_index % 12 + 1
        clock = dt.timedelta(hours=self.hours, minutes=self.minutes, seconds=self.seconds)
        try:
            day = min(now.day, calendar.monthrange(year, month)[1])
            moved = now.replace(year=year, month=month, day=day) + dt.timedelta(days=self.days)
            if moved.tzinfo is None:
                return moved + clock
            return (moved.astimezone(dt.UTC) + clock).astimezone(moved.tzinfo)
        except (ValueError, OverflowError) as exc:
            raise UnrepresentableTimeError(f"{self} after {now} is out of range: {exc}") from None


def _number(text: str, start: int, end: int, command_status: int) -> int:
    part = text[start:end]
    # str.isdigit alone accepts non-ASCII digits such as "²", which int() then rejects.
    if not (part.isascii() and part.isdigit()):
        raise InvalidTimeFieldError(
            f"time field {text!r}: {part!r} at {start} is not digits",
            command_status=command_status,
        )
    return int(part)


def parse_time(
    text: str, *, command_status: int = CommandStatus.ESME_RINVSCHED
) -> dt.datetime | RelativeTime | None:
    """Read a time field.

    Args:
        text: the field as decoded by the PDU codec (without its NUL).
        command_status: the status an error should carry: ESME_RINVSCHED (the default) for
            schedule_delivery_time, ESME_RINVEXPIRY for validity_period.

    Returns:
        ``None`` for an empty field; an aware ``datetime`` (tzinfo a fixed ``timezone`` with
        the field's offset, microseconds a multiple of 100 000) for an absolute time; a
        :class:`RelativeTime` for a relative one. The ``tnn`` of a relative time is ignored, as
        §7.1.1.2 says, but must still be digits.

    Raises:
        InvalidTimeFieldError: not 16 characters, not digits where digits go, an offset above
            48 quarter hours, a last character other than ``+``, ``-`` or ``R``, or a date
            that does not exist (month 13, 30 February, 24:00).
    """
    if text == "":
        return None
    if len(text) != _FIELD_LENGTH:
        raise InvalidTimeFieldError(
            f"time field {text!r} must be empty or {_FIELD_LENGTH} characters, got {len(text)}",
            command_status=command_status,
        )
    kind = text[15]
    if kind not in "+-R":
        raise InvalidTimeFieldError(
            f"time field {text!r} must end in '+', '-' or 'R', not {kind!r}",
            command_status=command_status,
        )
    units = [_number(text, i, i + 2, command_status) for i in range(0, 12, 2)]
    tenths = _number(text, 12, 13, command_status)
    quarters = _number(text, 13, 15, command_status)
    if kind == "R":
        return RelativeTime(*units)
    if quarters > _MAX_QUARTERS:
        raise InvalidTimeFieldError(
            f"time field {text!r}: UTC offset {quarters} quarter hours > {_MAX_QUARTERS}",
            command_status=command_status,
        )
    offset = quarters * _QUARTER_HOUR
    tz = dt.timezone(offset if kind == "+" else -offset)
    year, month, day, hour, minute, second = units
    try:
        return dt.datetime(
            2000 + year, month, day, hour, minute, second, tenths * _MICROSECONDS_PER_TENTH, tz
        )
    except ValueError as exc:
        raise InvalidTimeFieldError(
            f"time field {text!r}: {exc}", command_status=command_status
        ) from None


def _format_absolute(value: dt.datetime) -> str:
    offset = value.utcoffset()
    if offset is None:
        raise UnrepresentableTimeError(
            f"an absolute SMPP time needs an aware datetime, got naive {value}"
        )
    if not 2000 <= value.year <= 2099:
        raise UnrepresentableTimeError(f"year {value.year} is outside 2000-2099 (YY = year-2000)")
    quarters, rest = divmod(abs(offset), _QUARTER_HOUR)
    if rest or quarters > _MAX_QUARTERS:
        raise UnrepresentableTimeError(
            f"UTC offset {offset} is not a whole number of quarter hours within 12 hours; "
            "convert the datetime with .astimezone(datetime.UTC) first"
        )
    sign = "-" if offset < dt.timedelta(0) else "+"
    # Tenths are truncated, not rounded: rounding could carry into the next minute or day.
    tenths = value.microsecond // _MICROSECONDS_PER_TENTH
    return (
        f"{value.year - 2000:02d}{value.month:02d}{value.day:02d}"
        f"{value.hour:02d}{value.minute:02d}{value.second:02d}{tenths}{quarters:02d}{sign}"
    )


def format_time(value: dt.datetime | RelativeTime | dt.timedelta | None) -> str:
    """Write a time field.

    Args:
        value: ``None`` (not set: the empty string); an aware ``datetime`` (absolute, written
            in its own UTC offset, tenths of a second truncated); a :class:`RelativeTime`; or
            a ``timedelta``, written as a relative time of days, hours, minutes and seconds.

    Raises:
        UnrepresentableTimeError: a naive datetime, a year outside 2000-2099, a UTC offset that
            is not a whole number of quarter hours or exceeds 12 hours, or a timedelta that
            :meth:`RelativeTime.from_timedelta` refuses.
    """
    if value is None:
        return ""
    if isinstance(value, dt.timedelta):
        value = RelativeTime.from_timedelta(value)
    if isinstance(value, RelativeTime):
        return (
            f"{value.years:02d}{value.months:02d}{value.days:02d}"
            f"{value.hours:02d}{value.minutes:02d}{value.seconds:02d}000R"
        )
    return _format_absolute(value)


def resolve_time(value: dt.datetime | RelativeTime | None, now: dt.datetime) -> dt.datetime | None:
    """The instant a parsed time field names: absolute as is, relative counted from ``now``.

    Args:
        value: what :func:`parse_time` returned.
        now: the current time (aware, to compare with absolute times); never read from a clock
            here.

    Raises:
        UnrepresentableTimeError: see :meth:`RelativeTime.after`.
    """
    if isinstance(value, RelativeTime):
        return value.after(now)
    return value
