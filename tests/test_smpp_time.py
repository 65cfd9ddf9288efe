"""SMPP 3.4 §7.1.1 time fields: golden strings, strict validation, calendar units, round trips."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.constants import CommandStatus
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.smpp_time import (
    InvalidTimeFieldError,
    RelativeTime,
    SmppTimeError,
    UnrepresentableTimeError,
    format_time,
    parse_time,
    resolve_time,
)


def tz(minutes: int) -> dt.timezone:
    return dt.timezone(dt.timedelta(minutes=minutes))


# -- golden strings -------------------------------------------------------------------------------


def test_relative_example_of_the_spec() -> None:
    # §7.1.1.2: 2 years, 6 months, 10 days, 23 hours, 34 minutes and 29 seconds from now.
    assert parse_time("020610233429000R") == RelativeTime(2, 6, 10, 23, 34, 29)
    assert format_time(RelativeTime(2, 6, 10, 23, 34, 29)) == "020610233429000R"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 25 Nov 2026 10:30:45.7 local, 12 quarter hours (3 h) ahead of UTC: Istanbul.
        ("261125103045712+", dt.datetime(2026, 11, 25, 10, 30, 45, 700_000, tz(180))),
        # 4 quarter hours behind UTC.
        ("261125103045004-", dt.datetime(2026, 11, 25, 10, 30, 45, tzinfo=tz(-60))),
        # UTC itself, either sign.
        ("000101000000000+", dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),
        ("991231235959900-", dt.datetime(2099, 12, 31, 23, 59, 59, 900_000, dt.UTC)),
        # 22 quarter hours = 5:30 (India); 48 = the 12-hour limit.
        ("260102030405622+", dt.datetime(2026, 1, 2, 3, 4, 5, 600_000, tz(330))),
        ("280229120000048-", dt.datetime(2028, 2, 29, 12, tzinfo=tz(-720))),
    ],
)
def test_absolute_golden(text: str, expected: dt.datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert isinstance(parsed, dt.datetime) and parsed.utcoffset() == expected.utcoffset()
    assert format_time(expected) == (text if text[13:15] != "00" else text[:15] + "+")


def test_absolute_is_the_same_instant_in_utc() -> None:
    parsed = parse_time("261125103045712+")
    assert isinstance(parsed, dt.datetime)
    assert parsed.astimezone(dt.UTC) == dt.datetime(2026, 11, 25, 7, 30, 45, 700_000, dt.UTC)


def test_empty_means_not_set() -> None:
    assert parse_time("") is None
    assert format_time(None) == ""


def test_relative_tenths_and_offset_are_ignored() -> None:
    # §7.1.1.2: t and nn "are ignored and should be set to '0' and '00'".
    assert parse_time("000001000000123R") == RelativeTime(days=1)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (dt.timedelta(minutes=5), "000000000500000R"),
        (dt.timedelta(days=2, seconds=61), "000002000101000R"),
        (dt.timedelta(0), "000000000000000R"),
        (dt.timedelta(days=99, hours=23, minutes=59, seconds=59), "000099235959000R"),
        (RelativeTime(hours=48), "000000480000000R"),  # counts, not clock readings
        # Tenths are truncated, never rounded into the next second.
        (dt.datetime(2026, 12, 31, 23, 59, 59, 999_999, dt.UTC), "261231235959900+"),
        # Newfoundland, 3:30 behind UTC; Nepal, 5:45 ahead.
        (dt.datetime(2026, 7, 1, 8, 0, tzinfo=tz(-210)), "260701080000014-"),
        (dt.datetime(2026, 7, 1, 8, 0, tzinfo=tz(345)), "260701080000023+"),
    ],
)
def test_format_golden(value: dt.datetime | dt.timedelta | RelativeTime, text: str) -> None:
    assert format_time(value) == text


def test_format_uses_the_zone_offset_of_that_instant() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert format_time(dt.datetime(2026, 1, 15, 9, 0, tzinfo=berlin)) == "260115090000004+"
    assert format_time(dt.datetime(2026, 7, 15, 9, 0, tzinfo=berlin)) == "260715090000008+"


# -- strict validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "26112510304571+",  # 15 characters
        "2611251030457120+",  # 17 characters
        "261125103045712X",  # bad direction character
        "261125103045712r",  # lower-case R
        "261125103045749+",  # 49 quarter hours
        "261325103045712+",  # month 13
        "261100103045712+",  # month 0
        "260230103045712+",  # 30 February
        "261125243045712+",  # hour 24
        "261125106045712+",  # minute 60
        "26112510304571a+",  # not digits
        "2611251030 5712+",  # space
        "26112510304571²+",  # a digit to str.isdigit, not to SMPP
        "0206102334290a0R",  # relative tnn must still be digits
        "-20610233429000R",  # no signs inside
    ],
)
def test_invalid_fields_are_remote_errors(bad: str) -> None:
    with pytest.raises(InvalidTimeFieldError) as info:
        parse_time(bad)
    assert isinstance(info.value, RemoteProtocolError)
    assert isinstance(info.value, SmppTimeError) and isinstance(info.value, ValueError)
    assert info.value.command_status == CommandStatus.ESME_RINVSCHED


def test_invalid_field_carries_the_status_asked_for() -> None:
    with pytest.raises(InvalidTimeFieldError) as info:
        parse_time("26112510304571+", command_status=CommandStatus.ESME_RINVEXPIRY)
    assert info.value.command_status == CommandStatus.ESME_RINVEXPIRY


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 1, 1),  # naive
        dt.datetime(2026, 1, 1, tzinfo=tz(10)),  # not a quarter hour
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1, seconds=1))),
        dt.datetime(2026, 1, 1, tzinfo=tz(14 * 60)),  # Kiribati, 56 quarter hours
        dt.datetime(2026, 1, 1, tzinfo=tz(12 * 60 + 45)),  # Chatham, 51 quarter hours
        dt.datetime(1999, 12, 31, tzinfo=dt.UTC),
        dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
        -dt.timedelta(seconds=1),
        dt.timedelta(seconds=1.5),  # the relative form has no tenths
        dt.timedelta(days=100),
    ],
)
def test_unrepresentable_values_are_local_errors(value: dt.datetime | dt.timedelta) -> None:
    with pytest.raises(UnrepresentableTimeError) as info:
        format_time(value)
    assert isinstance(info.value, LocalProtocolError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [{"years": 100}, {"seconds": -1}, {"days": 1.5}, {"hours": True}, {"minutes": "5"}],
)
def test_relative_units_are_two_digit_ints(kwargs: dict[str, object]) -> None:
    with pytest.raises(UnrepresentableTimeError):
        RelativeTime(**kwargs)  # type: ignore[arg-type]


# -- calendar units ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "now", "expected"),
    [
        # A month from 31 January is the last day of February (leap years too).
        (RelativeTime(months=1), dt.datetime(2026, 1, 31, 12), dt.datetime(2026, 2, 28, 12)),
        (RelativeTime(months=1), dt.datetime(2028, 1, 31, 12), dt.datetime(2028, 2, 29, 12)),
        (RelativeTime(years=1), dt.datetime(2028, 2, 29), dt.datetime(2029, 2, 28)),
        # Months past December roll the year; 13 months = 1 year 1 month.
        (RelativeTime(months=13), dt.datetime(2026, 12, 15), dt.datetime(2028, 1, 15)),
        # Calendar first, then days: 31 Jan + 1 month = 28 Feb, + 1 day = 1 March.
        (RelativeTime(months=1, days=1), dt.datetime(2026, 1, 31), dt.datetime(2026, 3, 1)),
        # Clock units carry over midnight and month ends.
        (
            RelativeTime(hours=23, minutes=59, seconds=60 - 1),
            dt.datetime(2026, 12, 31, 0, 0, 1),
            dt.datetime(2027, 1, 1),
        ),
        (RelativeTime(hours=99), dt.datetime(2026, 2, 27), dt.datetime(2026, 3, 3, 3)),
        (
            RelativeTime(2, 6, 10, 23, 34, 29),
            dt.datetime(2026, 11, 25, 10, 0),
            dt.datetime(2029, 6, 5, 9, 34, 29),
        ),
    ],
)
def test_relative_after(relative: RelativeTime, now: dt.datetime, expected: dt.datetime) -> None:
    assert relative.after(now) == expected
    aware_now = now.replace(tzinfo=tz(180))
    assert relative.after(aware_now) == expected.replace(tzinfo=tz(180))


def test_days_are_calendar_days_and_hours_are_elapsed_across_dst() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = dt.datetime(2026, 3, 28, 12, 0, tzinfo=berlin)  # CET; clocks go forward 29 March
    one_day = RelativeTime(days=1).after(now)
    assert one_day == dt.datetime(2026, 3, 29, 12, 0, tzinfo=berlin)
    assert one_day.utcoffset() == dt.timedelta(hours=2)
    # Same wall clock, 23 h elapsed (same-tzinfo subtraction is wall clock, so compare in UTC).
    assert one_day.astimezone(dt.UTC) - now.astimezone(dt.UTC) == dt.timedelta(hours=23)
    hours = RelativeTime(hours=24).after(now)
    assert (hours.hour, hours.utcoffset()) == (13, dt.timedelta(hours=2))
    assert hours.astimezone(dt.UTC) - now.astimezone(dt.UTC) == dt.timedelta(hours=24)


def test_relative_after_out_of_range() -> None:
    with pytest.raises(UnrepresentableTimeError):
        RelativeTime(years=1).after(dt.datetime(9999, 6, 1))


def test_resolve_time() -> None:
    now = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
    absolute = parse_time("261126103045712+")
    assert resolve_time(absolute, now) is absolute
    assert resolve_time(parse_time("000000010000000R"), now) == now + dt.timedelta(hours=1)
    assert resolve_time(parse_time(""), now) is None


# -- round trips ---------------------------------------------------------------------------------

_NAIVE = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31))
_UNIT = st.integers(0, 99)


@settings(deadline=None)
@given(_NAIVE, st.integers(-48, 48))
def test_absolute_round_trip_in_any_quarter_hour_offset(value: dt.datetime, quarters: int) -> None:
    tenths = value.microsecond // 100_000 * 100_000
    aware = value.replace(microsecond=tenths, tzinfo=tz(15 * quarters))
    text = format_time(aware)
    assert len(text) == 16 and text[15] in "+-"
    parsed = parse_time(text)
    assert parsed == aware
    assert isinstance(parsed, dt.datetime) and parsed.utcoffset() == aware.utcoffset()
    assert (parsed.year, parsed.hour, parsed.microsecond) == (aware.year, aware.hour, tenths)


@settings(deadline=None)
@given(_NAIVE, st.integers(-48, 48))
def test_absolute_format_truncates_to_tenths(value: dt.datetime, quarters: int) -> None:
    aware = value.replace(tzinfo=tz(15 * quarters))
    parsed = parse_time(format_time(aware))
    assert isinstance(parsed, dt.datetime)
    assert dt.timedelta(0) <= aware - parsed < dt.timedelta(microseconds=100_000)


@settings(deadline=None)
@given(st.builds(RelativeTime, _UNIT, _UNIT, _UNIT, _UNIT, _UNIT, _UNIT))
def test_relative_round_trip(value: RelativeTime) -> None:
    text = format_time(value)
    assert len(text) == 16 and text.endswith("000R")
    assert parse_time(text) == value


@settings(deadline=None)
@given(
    st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=100)).map(
        lambda d: dt.timedelta(days=d.days, seconds=d.seconds)
    ),
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 1, 1)),
)
def test_timedelta_as_relative_time_lands_where_timedelta_does(
    delta: dt.timedelta, now: dt.datetime
) -> None:
    if delta.days > 99:
        with pytest.raises(UnrepresentableTimeError):
            format_time(delta)
        return
    parsed = parse_time(format_time(delta))
    assert isinstance(parsed, RelativeTime) and parsed.years == parsed.months == 0
    assert parsed.after(now) == now + delta
    aware = now.replace(tzinfo=dt.UTC)
    assert resolve_time(parsed, aware) == aware + delta


@settings(deadline=None)
@given(
    st.integers(0, 99),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 9),
    st.integers(0, 48),
    st.sampled_from("+-"),
)
def test_valid_strings_survive_parse_then_format(
    yy: int, mm: int, dd: int, hh: int, mi: int, ss: int, t: int, nn: int, p: str
) -> None:
    text = f"{yy:02d}{mm:02d}{dd:02d}{hh:02d}{mi:02d}{ss:02d}{t}{nn:02d}{p}"
    parsed = parse_time(text)
    assert isinstance(parsed, dt.datetime)
    # "00-" and "00+" are the same offset; the formatter writes UTC as "+".
    assert format_time(parsed) == (text if nn else text[:15] + "+")


@settings(deadline=None, max_examples=300)
@given(st.text("0123456789+-R", min_size=15, max_size=17) | st.text(max_size=20))
def test_garbage_parses_or_raises_invalid_time_field(text: str) -> None:
    # h11 fuzz invariant: a peer's field yields a value or the documented error, nothing else.
    try:
        parsed = parse_time(text)
    except InvalidTimeFieldError:
        return
    assert (parsed is None) == (text == "")
    assert format_time(parsed)[:12] == text[:12]
