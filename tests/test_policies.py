"""Send policies with hand-moved clocks: consent, stop words, caps, quiet hours, rates, OTP."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Rate, Settings, TenantConfig, parse_config
from gateway.policies import (
    SEND,
    ConsentPolicy,
    FrequencyCap,
    OtpGuard,
    Policies,
    QuietHoursPolicy,
    RateLimits,
    Verdict,
    is_stop_message,
)
from gateway.quiet_hours import QuietHours
from queues.model import ConsentRecord, MessageClass

TR = "+905321234567"
TR_SAME_PREFIX = "+905321239999"
NYC = "+12125550123"
UTC = dt.UTC
KEYWORDS = ("STOP", "DURDUR", "IPTAL")
NIGHT = QuietHours(dt.time(21, 0), dt.time(9, 0))


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """An instant given as UTC calendar fields."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def settings(**sections: Any) -> Settings:
    data: dict[str, Any] = {
        "routes": [
            {
                "name": "a",
                "prefixes": ["+90"],
                "host": "127.0.0.1",
                "system_id": "ulak",
                "password": "secret",
            }
        ],
        "tenants": [
            {"name": "shop", "api_key_sha256": "a" * 64},
            {"name": "bank", "api_key_sha256": "b" * 64, "require_opt_in": False},
            {
                "name": "tokyo",
                "api_key_sha256": "c" * 64,
                "timezone": "Asia/Tokyo",
                "rate": "1/10s",
            },
        ],
    }
    data.update(sections)
    return parse_config(data, {})


def tenant(policies_settings: Settings, name: str) -> TenantConfig:
    return next(t for t in policies_settings.tenants if t.name == name)


# --- consent -------------------------------------------------------------------------------


def consent(opted_in: bool, when: float, msisdn: str = TR, source: str = "api") -> ConsentRecord:
    return ConsentRecord("shop", msisdn, opted_in, source, when)


def test_opt_in_required_and_missing_rejects_with_a_precise_reason() -> None:
    verdict = ConsentPolicy().check(True, "shop", TR)
    assert verdict == Verdict(
        "reject",
        None,
        f"marketing to {TR} needs an opt-in record (tenant shop requires opt-in)",
        "no_consent",
    )


def test_opt_in_not_required_sends_without_record() -> None:
    assert ConsentPolicy().check(False, "shop", TR) is SEND


def test_opt_out_wins_even_when_opt_in_is_not_required() -> None:
    policy = ConsentPolicy()
    policy.update(consent(False, 100.0, source="mo:STOP"))
    verdict = policy.check(False, "shop", TR)
    assert verdict.action == "reject"
    assert verdict.code == "opted_out"
    assert TR in verdict.reason and "mo:STOP" in verdict.reason


def test_consent_latest_wins_and_older_entries_are_ignored() -> None:
    policy = ConsentPolicy()
    policy.update(consent(True, 100.0))
    assert policy.check(True, "shop", TR) is SEND
    policy.update(consent(False, 200.0))
    assert policy.check(True, "shop", TR).code == "opted_out"
    policy.update(consent(True, 150.0))  # late replay of an older entry
    assert policy.check(True, "shop", TR).code == "opted_out"
    policy.update(consent(True, 300.0))
    assert policy.check(True, "shop", TR) is SEND
    # Per tenant: another tenant's record says nothing here.
    assert policy.check(True, "bank", TR).code == "no_consent"


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), min_size=1, unique_by=lambda e: e[1])
)
def test_consent_view_does_not_depend_on_load_order(entries: list[tuple[bool, int]]) -> None:
    records = [consent(opted_in, float(t)) for opted_in, t in entries]
    forward, backward = ConsentPolicy(), ConsentPolicy()
    forward.load(records)
    backward.load(reversed(records))
    latest = max(records, key=lambda r: r.at)
    assert forward.get("shop", TR) == backward.get("shop", TR) == latest


# --- stop keywords -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "durdur",
        "DURDUR",
        "Durdur",
        "Durdur.",
        " iptal ",
        "iptal",
        "İPTAL",
        "IPTAL",
        "İptal!",
        "ıptal",
        "I\u0307PTAL",  # İ typed as I + combining dot
        "stop",
        "Stop!!!",
        "«STOP»",
        "\tSTOP\n",
        "Durdur lütfen",
        "durdur, artık yazmayın",
    ],
)
def test_stop_keywords_match_first_word(text: str) -> None:
    assert is_stop_message(text, KEYWORDS, "first_word")


@pytest.mark.parametrize(
    "text", ["", "   ", "...", "stopp", "please stop", "DURDURMA", "iptal-et", "merhaba"]
)
def test_non_stop_messages(text: str) -> None:
    assert not is_stop_message(text, KEYWORDS, "first_word")
    assert not is_stop_message(text, KEYWORDS, "exact")


def test_exact_needs_the_whole_message_to_be_the_keyword() -> None:
    assert is_stop_message(" İptal. ", KEYWORDS, "exact")
    assert not is_stop_message("Durdur lütfen", KEYWORDS, "exact")
    assert is_stop_message("Durdur lütfen", KEYWORDS, "first_word")


def test_keywords_in_any_case_match() -> None:
    assert is_stop_message("İPTAL", ["iptal"], "exact")
    assert is_stop_message("iptal", ["İptal"], "exact")


@given(
    st.sampled_from(KEYWORDS),
    st.lists(st.booleans()),
    st.text(alphabet=" .!?,;:\t", max_size=3),
    st.text(alphabet=" .!?,;:\t", max_size=3),
)
def test_any_casing_and_edge_punctuation_matches(
    keyword: str, upper: list[bool], before: str, after: str
) -> None:
    turkish = {"I": ("İ", "i"), "i": ("İ", "i")}
    chars = []
    for i, c in enumerate(keyword.lower()):
        up = upper[i] if i < len(upper) else False
        if c in turkish:
            chars.append(turkish[c][0] if up else turkish[c][1])
        else:
            chars.append(c.upper() if up else c)
    text = before + "".join(chars) + after
    assert is_stop_message(text, KEYWORDS, "exact")
    assert is_stop_message(text + " teşekkürler", KEYWORDS, "first_word")


# --- frequency cap -------------------------------------------------------------------------

DAY = 86_400.0


def test_frequency_cap_defers_exactly_until_the_oldest_send_leaves_the_window() -> None:
    cap = FrequencyCap(Rate(2, 7 * 86_400))
    t0 = at(2026, 3, 1, 10, 0)
    assert cap.check("shop", TR, t0) is SEND
    cap.note_sent("shop", TR, t0)
    cap.note_sent("shop", TR, t0 + DAY)
    verdict = cap.check("shop", TR, t0 + 2 * DAY)
    assert verdict.action == "defer"
    assert verdict.code == "frequency_cap"
    assert verdict.until == t0 + 7 * DAY
    assert verdict.reason == (
        f"frequency cap 2/7d reached for {TR} (tenant shop), "
        "next allowed at 2026-03-08T10:00:00+00:00"
    )
    assert cap.check("shop", TR, t0 + 7 * DAY - 0.001).action == "defer"
    assert cap.check("shop", TR, t0 + 7 * DAY) is SEND
    # Other recipients and other tenants have their own count.
    assert cap.check("bank", TR, t0 + 2 * DAY) is SEND
    assert cap.check("shop", NYC, t0 + 2 * DAY) is SEND


def test_frequency_cap_with_more_sends_than_allowed_waits_for_enough_to_leave() -> None:
    cap = FrequencyCap(Rate(2, 100))
    cap.load([("shop", TR, 10.0), ("shop", TR, 30.0), ("shop", TR, 20.0)])  # out of order
    # Three counted, two allowed: two must leave, the second oldest (20) at 120.
    assert cap.check("shop", TR, 50.0).until == 120.0
    assert cap.check("shop", TR, 120.0) is SEND


def test_frequency_cap_memory_is_pruned() -> None:
    cap = FrequencyCap(Rate(2, 100))
    cap.load((f"t{i}", TR, float(i)) for i in range(500))
    assert len(cap) == 500
    cap.check("shop", TR, 1000.0)  # a check sweeps once in a while
    assert len(cap) == 0


@given(
    count=st.integers(1, 4),
    period=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=60),
)
def test_frequency_cap_never_lets_more_than_count_through_in_any_window(
    count: int, period: int, gaps: list[float]
) -> None:
    cap = FrequencyCap(Rate(count, period))
    sent: list[float] = []
    now = 1_700_000_000.0
    for gap in gaps:
        now += gap
        verdict = cap.check("shop", TR, now)
        if verdict.action == "send":
            cap.note_sent("shop", TR, now)
            sent.append(now)
        else:
            assert verdict.action == "defer"
            assert verdict.until is not None and verdict.until > now
            # At `until` a slot is free again, and not an instant earlier.
            assert sum(1 for s in sent if verdict.until < s + period) <= count - 1
            assert sum(1 for s in sent if verdict.until <= s + period) >= count
    for j, t in enumerate(sent):
        assert sum(1 for s in sent[: j + 1] if t < s + period) <= count


# --- quiet hours ---------------------------------------------------------------------------


def quiet(tenant_zones: dict[str, str] | None = None, default: str = "UTC") -> QuietHoursPolicy:
    zones = {k: ZoneInfo(v) for k, v in (tenant_zones or {}).items()}
    return QuietHoursPolicy(NIGHT, ZoneInfo(default), zones)


@pytest.mark.parametrize(
    ("now", "until"),
    [
        # Istanbul is UTC+3 all year (no DST since 2016).
        (at(2026, 6, 15, 17, 59), None),  # 20:59 local
        (at(2026, 6, 15, 18, 0), at(2026, 6, 16, 6, 0)),  # 21:00: the window starts
        (at(2026, 6, 15, 20, 30), at(2026, 6, 16, 6, 0)),  # 23:30, before midnight
        (at(2026, 6, 15, 21, 30), at(2026, 6, 16, 6, 0)),  # 00:30 local, the next day
        (at(2026, 6, 16, 5, 59), at(2026, 6, 16, 6, 0)),  # 08:59
        (at(2026, 6, 16, 6, 0), None),  # 09:00: over
        (at(2026, 12, 31, 20, 0), at(2027, 1, 1, 6, 0)),  # across the year end
    ],
)
def test_quiet_hours_istanbul(now: float, until: float | None) -> None:
    verdict = quiet().check("shop", MessageClass.MARKETING, TR, now)
    if until is None:
        assert verdict is SEND
    else:
        assert (verdict.action, verdict.code, verdict.until) == ("defer", "quiet_hours", until)
        assert "Europe/Istanbul" in verdict.reason and "21:00-09:00" in verdict.reason


def test_quiet_hours_follow_us_dst_changes() -> None:
    policy = quiet()
    # 2026-03-08 is spring forward in New York: midnight is EST (-5), 09:00 is EDT (-4).
    verdict = policy.check("shop", MessageClass.MARKETING, NYC, at(2026, 3, 8, 5, 0))
    assert verdict.until == at(2026, 3, 8, 13, 0)
    # 2026-11-01 falls back: 01:00 EDT, and the window ends at 09:00 EST.
    verdict = policy.check("shop", MessageClass.MARKETING, NYC, at(2026, 11, 1, 5, 0))
    assert verdict.until == at(2026, 11, 1, 14, 0)
    # 20:00 EDT in summer is outside the window, though 00:00 UTC.
    assert policy.check("shop", MessageClass.MARKETING, NYC, at(2026, 7, 1, 0, 0)) is SEND


def test_tenant_time_zone_overrides_the_numbers() -> None:
    policy = quiet({"tokyo": "Asia/Tokyo"})
    now = at(2026, 6, 15, 13, 0)  # 16:00 in Istanbul, 22:00 in Tokyo
    assert policy.check("shop", MessageClass.MARKETING, TR, now) is SEND
    verdict = policy.check("tokyo", MessageClass.MARKETING, TR, now)
    assert verdict.until == at(2026, 6, 16, 0, 0)  # 09:00 in Tokyo
    assert "Asia/Tokyo" in verdict.reason


def test_default_zone_for_numbers_without_one() -> None:
    policy = quiet(default="Europe/Istanbul")
    unknown = "+80012345678"  # international freephone: no country, no zone
    verdict = policy.check("shop", MessageClass.MARKETING, unknown, at(2026, 6, 15, 20, 0))
    assert verdict.until == at(2026, 6, 16, 6, 0)


@pytest.mark.parametrize("klass", [MessageClass.OTP, MessageClass.TRANSACTIONAL])
def test_otp_and_transactional_ignore_quiet_hours(klass: MessageClass) -> None:
    assert quiet().check("shop", klass, TR, at(2026, 6, 15, 23, 0)) is SEND


def test_disabled_quiet_hours_send() -> None:
    policy = QuietHoursPolicy(None, ZoneInfo("UTC"))
    assert policy.check("shop", MessageClass.MARKETING, TR, at(2026, 6, 15, 23, 0)) is SEND


# --- rate limits ---------------------------------------------------------------------------


def test_token_bucket_defers_then_allows() -> None:
    limits = RateLimits(per_sender=Rate(2, 1))
    now = 1000.0
    for _ in range(2):
        assert limits.check("shop", "ULAK", "a", now) is SEND
        assert limits.take("shop", "ULAK", "a", now)
    verdict = limits.check("shop", "ULAK", "a", now)
    assert (verdict.action, verdict.code, verdict.until) == ("defer", "sender_rate", 1000.5)
    assert verdict.reason.startswith("sender ULAK is at its rate limit 2/1s")
    assert not limits.take("shop", "ULAK", "a", now)
    assert limits.check("shop", "ULAK", "a", 1000.5) is SEND
    assert limits.take("shop", "ULAK", "a", 1000.5)
    # Another sender has its own bucket.
    assert limits.check("shop", "OTHER", "a", 1000.5) is SEND


def test_tenant_override_and_slowest_bucket_decides() -> None:
    limits = RateLimits(
        per_tenant=Rate(100, 1), per_route=Rate(1, 1), tenant_rates={"tokyo": Rate(1, 10)}
    )
    assert limits.take("tokyo", None, "a", 0.0)
    verdict = limits.check("tokyo", None, "a", 0.0)
    assert (verdict.code, verdict.until) == ("tenant_rate", 10.0)  # not the route's 1.0
    assert limits.check("shop", None, None, 0.0) is SEND
    assert limits.check("shop", None, "a", 0.0).code == "route_rate"
    assert verdict.is_rate_limit


def test_take_is_all_or_nothing() -> None:
    limits = RateLimits(per_tenant=Rate(5, 1), per_route=Rate(1, 1))
    assert limits.take("shop", None, "a", 0.0)
    assert not limits.take("shop", None, "a", 0.0)  # the route is empty...
    for _ in range(4):  # ...so the tenant kept its four tokens
        assert limits.take("shop", None, None, 0.0)
    assert limits.check("shop", None, None, 0.0).code == "tenant_rate"


def test_full_buckets_are_dropped() -> None:
    limits = RateLimits(per_sender=Rate(10, 1))
    for i in range(100):
        limits.take(None, f"S{i}", None, 0.0)
    assert len(limits) == 100
    limits.check(None, "S0", None, 1000.0)  # sweeps: every bucket is full again
    assert len(limits) <= 1


@given(
    count=st.integers(1, 5),
    period=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60),
)
def test_rate_limit_never_exceeds_its_budget_and_its_deferral_is_enough(
    count: int, period: int, gaps: list[float]
) -> None:
    rate = Rate(count, period)
    limits = RateLimits(per_route=rate)
    now = 0.0
    taken: list[float] = []
    for gap in gaps:
        now += gap
        verdict = limits.check(None, None, "a", now)
        if verdict.action == "send":
            assert limits.take(None, None, "a", now)
            taken.append(now)
        else:
            assert verdict.until is not None and verdict.until > now
            probe = RateLimits(per_route=rate)
            probe._buckets = copy.deepcopy(limits._buckets)  # look ahead, changing nothing
            assert probe.check(None, None, "a", verdict.until).action == "send"
    for i, start in enumerate(taken):
        for j in range(i, len(taken)):
            assert j - i + 1 <= count + (taken[j] - start) * rate.per_second + 1e-6


# --- OTP -----------------------------------------------------------------------------------


def guard(**changes: Any) -> OtpGuard:
    options: dict[str, Any] = {"per_number": Rate(5, 3600), "cooldown_s": 30.0}
    options.update(changes)
    return OtpGuard(**options)


def test_otp_velocity_rejects_the_sixth_within_the_hour() -> None:
    otp = guard()
    t0 = at(2026, 6, 15, 12, 0)
    for i in range(5):
        now = t0 + i * 60
        assert otp.check("shop", TR, now) is SEND
        otp.note("shop", TR, now)
    verdict = otp.check("shop", TR, t0 + 300)
    assert (verdict.action, verdict.code, verdict.until) == ("reject", "otp_velocity", t0 + 3600)
    assert (
        verdict.reason == f"OTP limit 5/1h reached for {TR}, retry after 2026-06-15T13:00:00+00:00"
    )
    assert otp.check("shop", TR, t0 + 3600) is SEND
    assert otp.check("bank", TR, t0 + 300) is SEND  # counted per tenant


def test_otp_cooldown() -> None:
    otp = guard()
    otp.note("shop", TR, 100.0)
    verdict = otp.check("shop", TR, 110.0)
    assert (verdict.action, verdict.code, verdict.until) == ("reject", "otp_cooldown", 130.0)
    assert "wait 30 s" in verdict.reason
    assert otp.check("shop", TR, 130.0) is SEND
    assert guard(cooldown_s=0.0).check("shop", TR, 100.0) is SEND


def test_otp_prefix_guard_counts_numbers_of_one_range() -> None:
    otp = guard(per_prefix=Rate(3, 3600), prefix_length=6)
    numbers = ["+905321000001", "+905321000002", "+905321000003"]
    for number in numbers:
        assert otp.check("shop", number, 0.0) is SEND
        otp.note("shop", number, 0.0)
    verdict = otp.check("shop", TR_SAME_PREFIX, 0.0)
    assert (verdict.action, verdict.code, verdict.until) == ("reject", "prefix_guard", 3600.0)
    assert "+905321" in verdict.reason
    assert otp.check("shop", "+905331000000", 0.0) is SEND  # another prefix


def test_blocked_prefix_rejects() -> None:
    otp = guard(blocked_prefixes=("+882", "+883"))
    verdict = otp.check("shop", "+88212345678", 0.0)
    assert (verdict.action, verdict.code, verdict.until) == ("reject", "blocked_prefix", None)
    assert "+882" in verdict.reason


def test_otp_state_is_swept() -> None:
    otp = guard(per_prefix=Rate(100, 3600))
    for i in range(50):
        otp.note("shop", f"+9053210{i:05d}", 0.0)
    assert len(otp) > 50
    otp.check("shop", TR, 10_000.0)
    assert len(otp) == 0


@given(st.lists(st.floats(0, 900, allow_nan=False), min_size=1, max_size=50))
def test_otp_accepted_requests_respect_velocity_and_cooldown(gaps: list[float]) -> None:
    otp = guard(per_number=Rate(3, 600), cooldown_s=30.0)
    now = 0.0
    accepted: list[float] = []
    for gap in gaps:
        now += gap
        verdict = otp.check("shop", TR, now)
        if verdict.action == "send":
            otp.note("shop", TR, now)
            accepted.append(now)
        else:
            assert verdict.until is not None and verdict.until > now
    for earlier, later in itertools.pairwise(accepted):
        assert later >= earlier + 30.0
    for j, t in enumerate(accepted):
        assert sum(1 for s in accepted[: j + 1] if t < s + 600) <= 3


# --- the facade ----------------------------------------------------------------------------


def test_from_settings_and_at_accept() -> None:
    config = settings(limits={"blocked_prefixes": ["+882"], "otp_per_number": "2/1h"})
    policies = Policies.from_settings(config)
    shop, bank = tenant(config, "shop"), tenant(config, "bank")
    marketing, otp = MessageClass.MARKETING, MessageClass.OTP
    assert policies.at_accept(shop, marketing, TR, None, 0.0).code == "no_consent"
    assert policies.at_accept(bank, marketing, TR, None, 0.0) is SEND
    policies.consent.update(ConsentRecord("bank", TR, False, "mo:IPTAL", 1.0))
    assert policies.at_accept(bank, marketing, TR, None, 2.0).code == "opted_out"
    assert policies.at_accept(shop, MessageClass.TRANSACTIONAL, TR, None, 0.0) is SEND
    blocked = policies.at_accept(shop, MessageClass.TRANSACTIONAL, "+88212345678", None, 0.0)
    assert blocked.code == "blocked_prefix"
    # OTP: at_accept only checks; note_accepted counts (after the store committed).
    assert policies.at_accept(shop, otp, TR, None, 0.0) is SEND
    assert policies.at_accept(shop, otp, TR, None, 0.0) is SEND
    policies.note_accepted("shop", otp, TR, 0.0)
    assert policies.at_accept(shop, otp, TR, None, 10.0).code == "otp_cooldown"
    policies.note_accepted("shop", otp, TR, 40.0)
    assert policies.at_accept(shop, otp, TR, None, 80.0).code == "otp_velocity"
    policies.note_accepted("shop", MessageClass.TRANSACTIONAL, NYC, 0.0)  # not counted
    assert policies.at_accept(shop, otp, NYC, None, 1.0) is SEND


def test_at_send_marketing_checks_in_order() -> None:
    config = settings(limits={"marketing_per_recipient": "1/1d"})
    policies = Policies.from_settings(config)
    policies.consent.update(ConsentRecord("shop", TR, True, "api", 0.0))
    night, day = at(2026, 6, 15, 20, 0), at(2026, 6, 16, 10, 0)
    marketing = MessageClass.MARKETING
    assert policies.at_send("shop", marketing, TR, "ULAK", "a", night).code == "quiet_hours"
    assert policies.at_send("shop", marketing, TR, "ULAK", "a", day) is SEND
    policies.note_marketing_sent("shop", TR, day)
    verdict = policies.at_send("shop", marketing, TR, "ULAK", "a", day + 60)
    assert (verdict.code, verdict.until) == ("frequency_cap", day + DAY)
    # An opt-out after accept stops what is still waiting.
    policies.consent.update(ConsentRecord("shop", TR, False, "mo:DURDUR", day + 120))
    assert policies.at_send("shop", marketing, TR, "ULAK", "a", day + DAY).code == "opted_out"
    # A number with no entry at all is refused at accept; at send time the policy knows only
    # the numbers seen since start (a restart loads no ledger), so there only opt-outs count.
    shop = tenant(config, "shop")
    assert policies.at_accept(shop, marketing, NYC, "ULAK", day).code == "no_consent"
    assert policies.at_send("shop", marketing, NYC, "ULAK", "a", day).code != "no_consent"


def test_at_send_otp_skips_tenant_and_sender_rates_but_not_the_route() -> None:
    config = settings(limits={"per_tenant": "1/1m", "per_sender": "1/1m", "per_route": "3/1s"})
    policies = Policies.from_settings(config)
    now = at(2026, 6, 15, 23, 0)  # night in Istanbul: OTP does not care
    transactional = MessageClass.TRANSACTIONAL
    assert policies.at_send("bank", transactional, TR, "BANK", "a", now) is SEND  # takes tokens
    assert policies.at_send("bank", transactional, TR, "BANK", "a", now).code == "tenant_rate"
    assert policies.at_send("bank", MessageClass.OTP, TR, "BANK", "a", now) is SEND
    assert policies.at_send("bank", MessageClass.OTP, TR, "BANK", "a", now) is SEND
    verdict = policies.at_send("bank", MessageClass.OTP, TR, "BANK", "a", now)
    assert (verdict.code, verdict.until) == ("route_rate", now + 1 / 3)


def test_at_send_tenant_rate_override_and_time_zone_from_settings() -> None:
    policies = Policies.from_settings(settings())
    now = at(2026, 6, 15, 10, 0)  # 13:00 Istanbul, 19:00 Tokyo
    assert policies.at_send("tokyo", MessageClass.TRANSACTIONAL, TR, None, "a", now) is SEND
    verdict = policies.at_send("tokyo", MessageClass.TRANSACTIONAL, TR, None, "a", now)
    assert (verdict.code, verdict.until) == ("tenant_rate", now + 10)
    policies.consent.update(ConsentRecord("tokyo", TR, True, "api", 0.0))
    later = at(2026, 6, 15, 13, 0)  # 22:00 in Tokyo, the tenant's zone
    verdict = policies.at_send("tokyo", MessageClass.MARKETING, TR, None, "a", later)
    assert (verdict.code, verdict.until) == ("quiet_hours", at(2026, 6, 16, 0, 0))


def test_no_frequency_cap_configured() -> None:
    policies = Policies.from_settings(settings())
    assert policies.frequency is None
    policies.note_marketing_sent("shop", TR, 0.0)  # harmless
