"""Quiet hours for marketing, evaluated in the recipient's local time.

DESIGN §2: marketing inside the quiet window is deferred to the window's end, never rejected;
OTP and transactional ignore quiet hours. The recipient's time zone comes from the number's
country code via phonenumbers, unless the tenant overrides it.

Some numbers map to several zones (a Russian or Australian mobile, a +1 number without a known
area code). We then defer until it is outside quiet hours in *every* candidate zone: waking a
customer at 03:00 in Vladivostok is the failure we exist to prevent. If those zones share no
allowed time at all within two days, the first zone phonenumbers lists decides.

The clock is injected: every function takes ``now`` as an aware datetime.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

__all__ = ["QuietHours", "release_time", "zones_for_number"]

_UNKNOWN_ZONE = "Etc/Unknown"
_SEARCH_LIMIT = dt.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window ``[start, end)`` in local time; it crosses midnight when end <= start."""

    start: dt.time
    end: dt.time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("quiet hours start and end must differ")

    def contains(self, local: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def window_end(self, local_now: dt.datetime) -> dt.datetime:
        """When the window containing ``local_now`` ends, as an aware datetime.

        ``local_now`` must be inside the window.
        """
        day = local_now.date()
        if self.start >= self.end and local_now.time() >= self.start:
            day += dt.timedelta(days=1)  # the evening part: the window ends tomorrow morning
        tz = local_now.tzinfo
        return dt.datetime.combine(day, self.end, tzinfo=tz)


@lru_cache(maxsize=4096)
def _zones_for_e164(msisdn: str) -> tuple[str, ...]:
    try:
        number = phonenumbers.parse(msisdn)
    except phonenumbers.NumberParseException:
        return ()
    zones = pn_timezone.time_zones_for_number(number)
    return tuple(z for z in zones if z != _UNKNOWN_ZONE)


def zones_for_number(
    msisdn: str, default: ZoneInfo, override: ZoneInfo | None = None
) -> tuple[ZoneInfo, ...]:
    """The candidate time zones of an E.164 number.

    Args:
        msisdn: the recipient, ``+`` and digits.
        default: used when the number's zone cannot be told.
        override: the tenant's fixed zone; wins over the number when given.
    """
    if override is not None:
        return (override,)
    zones: list[ZoneInfo] = []
    for name in _zones_for_e164(msisdn):
        try:
            zones.append(ZoneInfo(name))
        except ZoneInfoNotFoundError:
            continue
    return tuple(zones) or (default,)


def _single_zone_release(quiet: QuietHours, zone: ZoneInfo, now: dt.datetime) -> dt.datetime:
    local = now.astimezone(zone)
    if not quiet.contains(local.time()):
        return now
    return quiet.window_end(local).astimezone(dt.UTC)


def release_time(
    quiet: QuietHours, zones: tuple[ZoneInfo, ...], now: dt.datetime
) -> dt.datetime | None:
    """When marketing to a recipient in ``zones`` may go out, or None if it may go now.

    Args:
        quiet: the tenant's quiet window.
        zones: candidate zones (see :func:`zones_for_number`), at least one.
        now: the current instant, timezone-aware.

    Returns:
        None outside quiet hours in every zone; otherwise the earliest UTC instant at which
        no zone is in quiet hours.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not zones:
        raise ValueError("at least one zone is needed")
    now_utc = now.astimezone(dt.UTC)
    candidate = now_utc
    # Push the candidate past each zone's window until no zone objects; each push moves it
    # forward, so this ends, and the limit stops zones that never agree.
    while candidate - now_utc <= _SEARCH_LIMIT:
        moved = max(_single_zone_release(quiet, zone, candidate) for zone in zones)
        if moved == candidate:
            return None if candidate == now_utc else candidate
        candidate = moved
    first = _single_zone_release(quiet, zones[0], now_utc)
    return None if first == now_utc else first
