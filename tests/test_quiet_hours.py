from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.quiet_hours import QuietHours, release_time, zones_for_number

UTC = dt.UTC
IST = ZoneInfo("Europe/Istanbul")  # UTC+3, no DST
NIGHT = QuietHours(dt.time(21, 0), dt.time(9, 0))


def at(
    zone: dt.tzinfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=zone)


def test_turkish_number_resolves_to_istanbul() -> None:
    assert zones_for_number("+905321234567", default=ZoneInfo("UTC")) == (IST,)


def test_unknown_number_uses_default_and_override_wins() -> None:
    default = ZoneInfo("Europe/Berlin")
    assert zones_for_number("+999123", default=default) == (default,)
    assert zones_for_number("not a number", default=default) == (default,)
    assert zones_for_number("+905321234567", default=default, override=default) == (default,)


def test_inside_evening_defers_to_next_morning_local() -> None:
    # 22:30 in Istanbul is 19:30 UTC; the window ends at 09:00 local = 06:00 UTC next day.
    release = release_time(NIGHT, (IST,), at(UTC, 2026, 11, 25, 19, 30))
    assert release == at(UTC, 2026, 11, 26, 6, 0)


def test_inside_early_morning_defers_to_same_morning() -> None:
    release = release_time(NIGHT, (IST,), at(IST, 2026, 11, 26, 3, 15))
    assert release == at(IST, 2026, 11, 26, 9, 0)


def test_outside_quiet_hours_goes_now() -> None:
    assert release_time(NIGHT, (IST,), at(IST, 2026, 11, 26, 9, 0)) is None
    assert release_time(NIGHT, (IST,), at(IST, 2026, 11, 26, 20, 59)) is None


def test_same_utc_instant_differs_by_recipient_zone() -> None:
    now = at(UTC, 2026, 11, 25, 19, 30)  # 22:30 Istanbul, 14:30 New York
    new_york = zones_for_number("+12125551234", default=ZoneInfo("UTC"))
    assert release_time(NIGHT, new_york, now) is None
    assert release_time(NIGHT, (IST,), now) is not None


def test_daytime_window_not_crossing_midnight() -> None:
    lunch = QuietHours(dt.time(12, 0), dt.time(13, 30))
    assert release_time(lunch, (IST,), at(IST, 2026, 1, 1, 12, 10)) == at(IST, 2026, 1, 1, 13, 30)
    assert release_time(lunch, (IST,), at(IST, 2026, 1, 1, 13, 30)) is None


def test_multi_zone_number_waits_for_every_zone() -> None:
    moscow, vladivostok = ZoneInfo("Europe/Moscow"), ZoneInfo("Asia/Vladivostok")  # +3, +10
    now = at(moscow, 2026, 6, 1, 12, 0)  # noon Moscow, 19:00 Vladivostok: both allowed
    assert release_time(NIGHT, (moscow, vladivostok), now) is None
    now = at(moscow, 2026, 6, 1, 15, 0)  # 22:00 Vladivostok: quiet there
    release = release_time(NIGHT, (moscow, vladivostok), now)
    # Vladivostok wakes at 09:00 local = 02:00 Moscow, but then Moscow sleeps until 09:00.
    assert release == at(moscow, 2026, 6, 2, 9, 0)


def test_dst_change_night_in_berlin() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # The night of the spring change (2026-03-29, 02:00 -> 03:00 local).
    release = release_time(NIGHT, (berlin,), at(berlin, 2026, 3, 28, 23, 0))
    assert release == at(berlin, 2026, 3, 29, 9, 0)
    assert release is not None and release.astimezone(UTC).hour == 7  # CEST is UTC+2


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError):
        release_time(NIGHT, (IST,), dt.datetime(2026, 1, 1, 3, 0))


ZONES = st.sampled_from(
    [
        "Europe/Istanbul",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
    ]
).map(ZoneInfo)


@given(
    zones=st.lists(ZONES, min_size=1, max_size=3, unique_by=str),
    minutes=st.integers(0, 60 * 24 * 400),
    start=st.times(),
    length_min=st.integers(1, 12 * 60),
)
def test_release_is_outside_quiet_hours_everywhere_and_never_early(
    zones: list[ZoneInfo], minutes: int, start: dt.time, length_min: int
) -> None:
    end_dt = dt.datetime.combine(dt.date(2000, 1, 1), start) + dt.timedelta(minutes=length_min)
    quiet = QuietHours(start.replace(microsecond=0), end_dt.time().replace(microsecond=0))
    now = dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(minutes=minutes)
    release = release_time(quiet, tuple(zones), now)

    def quiet_somewhere(t: dt.datetime) -> bool:
        return any(quiet.contains(t.astimezone(z).time()) for z in zones)

    def zones_never_agree() -> bool:
        probe = now
        while probe < now + dt.timedelta(days=2):
            if not quiet_somewhere(probe):
                return False
            probe += dt.timedelta(minutes=1)
        return True

    first_quiet = quiet.contains((release or now).astimezone(zones[0]).time())
    assert not first_quiet, "the first zone (the fallback's choice) is always satisfied"
    if release is None:
        assert not quiet_somewhere(now) or zones_never_agree()
        return
    assert now < release <= now + dt.timedelta(days=2, hours=1)
    if quiet_somewhere(release):
        assert zones_never_agree()  # fell back to the first zone
        return
    # Earliest: at every step before release, some zone is still in quiet hours.
    step = now
    while step < release:
        assert quiet_somewhere(step)
        step += dt.timedelta(minutes=7)
