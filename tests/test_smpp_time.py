from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.smpp_time import RelativeTime, SmppTimeError, format_time, parse_time


def test_spec_examples() -> None:
    # §7.1.1: relative "020610233429000R" = 2 years 6 months 10 days 23:34:29 from now.
    assert parse_time("020610233429000R") == RelativeTime(2, 6, 10, 23, 34, 29)
    # 2026-11-25 10:30:45.7, UTC+3 (12 quarter hours ahead).
    value = parse_time("261125103045712+")
    tz = dt.timezone(dt.timedelta(hours=3))
    assert value == dt.datetime(2026, 11, 25, 10, 30, 45, 700_000, tz)
    assert parse_time("261125103045004-") == dt.datetime(
        2026, 11, 25, 10, 30, 45, tzinfo=dt.timezone(dt.timedelta(hours=-1))
    )
    assert parse_time("") is None
    assert format_time(None) == ""


def test_format_golden() -> None:
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert format_time(dt.datetime(2026, 1, 2, 3, 4, 5, 600_000, tz)) == "260102030405622+"
    assert format_time(dt.timedelta(minutes=5)) == "000000000500000R"
    assert format_time(dt.timedelta(days=2, seconds=61)) == "000002000101000R"


@pytest.mark.parametrize(
    "bad",
    [
        "26112510304571+",  # 15 characters
        "261125103045712X",  # bad sign
        "261125103045749+",  # 49 quarter hours
        "261325103045712+",  # month 13
        "26112510304571a+",  # not digits
        "020610233429001R",  # relative without 000
    ],
)
def test_invalid_fields(bad: str) -> None:
    with pytest.raises(SmppTimeError):
        parse_time(bad)


def test_unformattable_values() -> None:
    with pytest.raises(SmppTimeError):
        format_time(dt.datetime(2026, 1, 1))  # naive
    with pytest.raises(SmppTimeError):
        format_time(dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(minutes=10))))
    with pytest.raises(SmppTimeError):
        format_time(dt.datetime(1999, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(SmppTimeError):
        format_time(-dt.timedelta(seconds=1))


def test_relative_months_move_the_calendar() -> None:
    now = dt.datetime(2026, 1, 31, 12, 0, tzinfo=dt.UTC)
    assert RelativeTime(months=1).after(now) == dt.datetime(2026, 2, 28, 12, 0, tzinfo=dt.UTC)
    assert RelativeTime(years=2, months=13, days=1, seconds=5).after(now) == dt.datetime(
        2029, 3, 1, 12, 0, 5, tzinfo=dt.UTC
    )


@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)),
    st.integers(-48, 48),
)
def test_absolute_round_trip(value: dt.datetime, quarters: int) -> None:
    tz = dt.timezone(dt.timedelta(minutes=15 * quarters))
    aware = value.replace(microsecond=value.microsecond // 100_000 * 100_000, tzinfo=tz)
    text = format_time(aware)
    assert len(text) == 16
    parsed = parse_time(text)
    assert parsed == aware
    assert isinstance(parsed, dt.datetime) and parsed.utcoffset() == aware.utcoffset()


@given(st.builds(RelativeTime, *[st.integers(0, 99)] * 6))
def test_relative_round_trip(value: RelativeTime) -> None:
    assert parse_time(format_time(value)) == value
