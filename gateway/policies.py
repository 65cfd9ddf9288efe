"""Send policies: consent, marketing frequency caps, quiet hours, rate limits, OTP guards.

DESIGN §2 names the rules; this module decides them and nothing else. It is pure logic: no
I/O and no clock reads. Every check takes ``now`` (epoch seconds) and answers with a
:class:`Verdict`, so tests move time by hand and the pipeline decides what to store and when
to wake up.

Two moments matter. At accept (:meth:`Policies.at_accept`) a message can be refused outright:
marketing without consent, an OTP beyond its velocity limits. At send
(:meth:`Policies.at_send`) nothing is lost: quiet hours, frequency caps and rate limits only
defer; the one refusal there is consent withdrawn after the message was accepted, because an
opt-out takes effect at once.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import unicodedata
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo

from gateway.config import LimitsConfig, QuietHoursConfig, Rate, Settings, TenantConfig
from gateway.quiet_hours import QuietHours, release_time, zones_for_number
from gateway.ratelimit import TokenBucket
from queues.model import ConsentRecord, MessageClass

__all__ = [
    "SEND",
    "ConsentPolicy",
    "FrequencyCap",
    "OtpGuard",
    "Policies",
    "QuietHoursPolicy",
    "RateLimits",
    "Verdict",
    "is_stop_message",
]

logger = logging.getLogger(__name__)

Action = Literal["send", "defer", "reject"]

_SWEEP_EVERY_S: Final = 60.0
"""Least time between two sweeps of idle state; sweeps keep memory bounded by live keys."""
_SWEEP_AT_MOST_S: Final = 3600.0
"""A sliding window sweeps a quarter of its period apart, within these bounds: a 7-day cap
over a million recipients should not walk them all every minute."""

_TOKEN_SLACK: Final = 1e-9
"""A bucket this close to one token counts as having it: float refill may land a hair short
of 1.0 at the very instant :meth:`RateLimits.check` promised, and must not defer again."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a policy says about one message.

    Attributes:
        action: ``send``; ``defer`` (try again at ``until``); or ``reject`` (never send).
        until: for ``defer``, the epoch second from which the message may go. For a
            ``reject`` whose cause passes (OTP velocity, cooldown), when a new request could
            succeed, for a ``Retry-After``; otherwise None.
        reason: a sentence for the API caller or the status history.
        code: a stable machine code (``no_consent``, ``opted_out``, ``frequency_cap``,
            ``quiet_hours``, ``tenant_rate``, ``sender_rate``, ``route_rate``,
            ``otp_velocity``, ``otp_cooldown``, ``prefix_guard``, ``blocked_prefix``);
            ``ok`` for ``send``.
    """

    action: Action
    until: float | None = None
    reason: str = ""
    code: str = "ok"

    @property
    def is_rate_limit(self) -> bool:
        """A token-bucket deferral: routine pacing rather than a status worth recording."""
        return self.code in ("tenant_rate", "sender_rate", "route_rate")


SEND: Final = Verdict("send")


def _defer(until: float, reason: str, code: str) -> Verdict:
    return Verdict("defer", until, reason, code)


def _reject(reason: str, code: str, until: float | None = None) -> Verdict:
    return Verdict("reject", until, reason, code)


def _iso(at: float) -> str:
    """An epoch second as ISO 8601 UTC, to the second: what a caller reads in a reason."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


# --- consent -------------------------------------------------------------------------------


class ConsentPolicy:
    """The latest consent record of each (tenant, number), held in memory.

    The store keeps the ledger; the pipeline loads the latest records at start and passes
    every new one to :meth:`update`. Only marketing consults consent.
    """

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], ConsentRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def update(self, record: ConsentRecord) -> None:
        """Take a consent entry; the latest (by ``at``) wins, a tie goes to the newer call.

        An entry older than the one held is ignored, so replaying the ledger in any order
        converges on the same view.
        """
        key = (record.tenant, record.msisdn)
        held = self._records.get(key)
        if held is None or record.at >= held.at:
            self._records[key] = record

    def load(self, records: Iterable[ConsentRecord]) -> None:
        """Take many entries at start (see :meth:`update`)."""
        for record in records:
            self.update(record)

    def get(self, tenant: str, msisdn: str) -> ConsentRecord | None:
        return self._records.get((tenant, msisdn))

    def check(self, tenant_requires_opt_in: bool, tenant: str, msisdn: str) -> Verdict:
        """Whether ``tenant`` may send marketing to ``msisdn``.

        An opt-out always wins, even for a tenant that needs no opt-in: DESIGN §2 says it
        suppresses marketing at once.
        """
        record = self._records.get((tenant, msisdn))
        if record is not None and not record.opted_in:
            return _reject(
                f"{msisdn} opted out of marketing from tenant {tenant} "
                f"at {_iso(record.at)} (source: {record.source})",
                "opted_out",
            )
        if record is None and tenant_requires_opt_in:
            return _reject(
                f"marketing to {msisdn} needs an opt-in record (tenant {tenant} requires opt-in)",
                "no_consent",
            )
        return SEND


# --- stop keywords -------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Case-fold for keyword matching, right for Turkish as well as English.

    ``casefold`` alone maps ``İ`` to ``i`` + U+0307 (combining dot) and leaves dotless ``ı``
    alone, so "İPTAL" and "ıptal" would miss "IPTAL". Both become plain ``i`` here. NFC first,
    so an ``I`` + U+0307 typed as two code points is the same ``İ``.
    """
    folded = unicodedata.normalize("NFC", text).casefold()
    return folded.replace("i\u0307", "i").replace("ı", "i")


def _is_edge_junk(char: str) -> bool:
    # Punctuation (P*), symbols (S*: emoji, "!" look-alikes), separators and controls.
    return char.isspace() or unicodedata.category(char)[0] in "PSZC"


def _trim(word: str) -> str:
    start, end = 0, len(word)
    while start < end and _is_edge_junk(word[start]):
        start += 1
    while end > start and _is_edge_junk(word[end - 1]):
        end -= 1
    return word[start:end]


def is_stop_message(
    text: str, keywords: Iterable[str], match: Literal["first_word", "exact"] = "first_word"
) -> bool:
    """Whether an MO message asks to stop marketing.

    Args:
        text: the decoded message.
        keywords: the stop words (``[consent] stop_keywords``), any case.
        match: ``first_word``: the message starts with a keyword ("Durdur lütfen");
            ``exact``: the whole message is one keyword. Either way case (Turkish included),
            surrounding whitespace and punctuation are ignored: "Durdur." and " iptal " stop.

    Returns:
        True when the message is a stop request.
    """
    body = _trim(text)
    if not body:
        return False
    if match == "first_word":
        body = _trim(body.split(maxsplit=1)[0])
    elif any(c.isspace() for c in body):
        return False
    candidate = _fold(body)
    return any(candidate == _fold(_trim(keyword)) for keyword in keywords)


# --- sliding windows -----------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)


class _SlidingCounter(Generic[K]):
    """Events per key over a sliding period, for caps that must hold in *every* window.

    It stores each event's expiry (``at + period``), sorted. An event counts while
    ``now < expiry``; storing the expiry makes "counted" and "the instant it stops counting"
    the same float, so a deferral to that instant is always enough.
    """

    __slots__ = ("_expiries", "_last_sweep", "_sweep_every_s", "count", "period_s")

    def __init__(self, count: int, period_s: float) -> None:
        self.count = count
        self.period_s = period_s
        self._sweep_every_s = min(max(period_s / 4, _SWEEP_EVERY_S), _SWEEP_AT_MOST_S)
        self._expiries: dict[K, list[float]] = {}
        self._last_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._expiries)

    def _live(self, key: K, now: float) -> list[float] | None:
        expiries = self._expiries.get(key)
        if expiries is None:
            return None
        gone = bisect.bisect_right(expiries, now)
        if gone:
            del expiries[:gone]
        if not expiries:
            del self._expiries[key]
            return None
        return expiries

    def free_at(self, key: K, now: float) -> float | None:
        """None if one more event fits at ``now``; else the first instant one does."""
        self._maybe_sweep(now)
        expiries = self._live(key, now)
        if expiries is None or len(expiries) < self.count:
            return None
        # Sorted e_0..e_{m-1}: one more fits once at most count-1 remain, i.e. at e_{m-count}.
        return expiries[len(expiries) - self.count]

    def add(self, key: K, at: float) -> None:
        bisect.insort(self._expiries.setdefault(key, []), at + self.period_s)

    def _maybe_sweep(self, now: float) -> None:
        if now - self._last_sweep >= self._sweep_every_s:
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget every event that no longer counts at ``now``."""
        self._last_sweep = now
        for key in list(self._expiries):
            self._live(key, now)


# --- frequency cap -------------------------------------------------------------------------


class FrequencyCap:
    """At most ``rate.count`` marketing messages per recipient and tenant in any period.

    A cap defers, never rejects: the message goes when the oldest counted send leaves the
    window. The pipeline notes each marketing send (:meth:`note_sent`) and rebuilds the view at
    start from the store (:meth:`load`).
    """

    __slots__ = ("_sends", "rate")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._sends: _SlidingCounter[tuple[str, str]] = _SlidingCounter(rate.count, rate.period_s)

    def __len__(self) -> int:
        """Recipients with a send still counted (as of the last check or sweep)."""
        return len(self._sends)

    def check(self, tenant: str, msisdn: str, now: float) -> Verdict:
        until = self._sends.free_at((tenant, msisdn), now)
        if until is None:
            return SEND
        return _defer(
            until,
            f"frequency cap {self.rate} reached for {msisdn} (tenant {tenant}), "
            f"next allowed at {_iso(until)}",
            "frequency_cap",
        )

    def note_sent(self, tenant: str, msisdn: str, at: float) -> None:
        self._sends.add((tenant, msisdn), at)

    def load(self, entries: Iterable[tuple[str, str, float]]) -> None:
        """Rebuild from ``(tenant, msisdn, sent_at)``; stale entries go at the next sweep."""
        for tenant, msisdn, at in entries:
            self.note_sent(tenant, msisdn, at)

    def sweep(self, now: float) -> None:
        self._sends.sweep(now)


# --- quiet hours ---------------------------------------------------------------------------


class QuietHoursPolicy:
    """Marketing waits for the end of the quiet window in the recipient's local time.

    Wraps :mod:`gateway.quiet_hours`: the zone comes from the number, or from the tenant's
    ``timezone`` when it sets one. OTP and transactional always pass.
    """

    __slots__ = ("_default", "_quiet", "_tenant_zones")

    def __init__(
        self,
        quiet: QuietHours | None,
        default_zone: ZoneInfo,
        tenant_zones: Mapping[str, ZoneInfo] | None = None,
    ) -> None:
        """Set up the window.

        Args:
            quiet: the daily window; None disables quiet hours.
            default_zone: for numbers whose zone cannot be told.
            tenant_zones: tenants that fix one zone for all their recipients.
        """
        self._quiet = quiet
        self._default = default_zone
        self._tenant_zones = dict(tenant_zones or {})

    @classmethod
    def from_config(
        cls, config: QuietHoursConfig, tenants: Iterable[TenantConfig] = ()
    ) -> QuietHoursPolicy:
        quiet = QuietHours(config.start, config.end) if config.enabled else None
        zones = {t.name: ZoneInfo(t.timezone) for t in tenants if t.timezone is not None}
        return cls(quiet, ZoneInfo(config.default_timezone), zones)

    def check(self, tenant: str, klass: MessageClass, msisdn: str, now: float) -> Verdict:
        if self._quiet is None or klass is not MessageClass.MARKETING:
            return SEND
        zones = zones_for_number(msisdn, self._default, self._tenant_zones.get(tenant))
        release = release_time(self._quiet, zones, dt.datetime.fromtimestamp(now, dt.UTC))
        if release is None:
            return SEND
        until = release.timestamp()
        names = ", ".join(zone.key for zone in zones)
        window = f"{self._quiet.start:%H:%M}-{self._quiet.end:%H:%M}"
        return _defer(
            until,
            f"quiet hours {window} for {msisdn} ({names}), deferred until {_iso(until)}",
            "quiet_hours",
        )


# --- rate limits ---------------------------------------------------------------------------

_Scope = Literal["tenant", "sender", "route"]


class RateLimits:
    """Token buckets per tenant, per sender address and per route (``[limits]``).

    A bucket banks ``rate.count`` tokens and refills at ``rate.per_second``. Limits defer,
    never reject. Buckets are made on first use; a full bucket is the same as a new one, so
    sweeps drop full buckets and memory follows the active keys.
    """

    __slots__ = ("_buckets", "_last_sweep", "_rates", "_tenant_rates")

    def __init__(
        self,
        *,
        per_tenant: Rate | None = None,
        per_sender: Rate | None = None,
        per_route: Rate | None = None,
        tenant_rates: Mapping[str, Rate] | None = None,
    ) -> None:
        self._rates: dict[_Scope, Rate | None] = {
            "tenant": per_tenant,
            "sender": per_sender,
            "route": per_route,
        }
        self._tenant_rates = dict(tenant_rates or {})
        self._buckets: dict[tuple[_Scope, str], TokenBucket] = {}
        self._last_sweep = float("-inf")

    @classmethod
    def from_config(cls, limits: LimitsConfig, tenants: Iterable[TenantConfig] = ()) -> RateLimits:
        return cls(
            per_tenant=limits.per_tenant,
            per_sender=limits.per_sender,
            per_route=limits.per_route,
            tenant_rates={t.name: t.rate for t in tenants if t.rate is not None},
        )

    def __len__(self) -> int:
        return len(self._buckets)

    def _rate(self, scope: _Scope, name: str) -> Rate | None:
        if scope == "tenant":
            return self._tenant_rates.get(name, self._rates["tenant"])
        return self._rates[scope]

    def _bucket(self, scope: _Scope, name: str, now: float) -> TokenBucket | None:
        key = (scope, name)
        bucket = self._buckets.get(key)
        if bucket is None:
            rate = self._rate(scope, name)
            if rate is None:
                return None
            bucket = TokenBucket(rate.per_second, rate.count, now)
            self._buckets[key] = bucket
        return bucket

    def _applicable(
        self, tenant: str | None, sender: str | None, route: str | None, now: float
    ) -> list[tuple[_Scope, str, TokenBucket]]:
        found: list[tuple[_Scope, str, TokenBucket]] = []
        scopes: tuple[tuple[_Scope, str | None], ...] = (
            ("tenant", tenant),
            ("sender", sender),
            ("route", route),
        )
        for scope, name in scopes:
            if name is None:
                continue
            bucket = self._bucket(scope, name, now)
            if bucket is not None:
                found.append((scope, name, bucket))
        return found

    def check(
        self, tenant: str | None, sender: str | None, route: str | None, now: float
    ) -> Verdict:
        """Whether a message may go at ``now``; a scope given as None is not limited.

        Returns:
            ``send``, or ``defer`` until every limiting bucket has a token again; the reason
            names the bucket that is slowest to refill.
        """
        if now - self._last_sweep >= _SWEEP_EVERY_S:
            self.sweep(now)
        worst: tuple[float, _Scope, str] | None = None
        for scope, name, bucket in self._applicable(tenant, sender, route, now):
            if bucket.available(now) >= 1 - _TOKEN_SLACK:
                continue
            delay = bucket.delay_until(now)
            if worst is None or delay > worst[0]:
                worst = (delay, scope, name)
        if worst is None:
            return SEND
        delay, scope, name = worst
        until = now + delay
        rate = self._rate(scope, name)
        return _defer(
            until,
            f"{scope} {name} is at its rate limit {rate}, next token at {_iso(until)}",
            f"{scope}_rate",
        )

    def take(self, tenant: str | None, sender: str | None, route: str | None, now: float) -> bool:
        """Consume one token from each applicable bucket, all or none.

        Returns:
            False (and nothing taken) when some bucket has no token: :meth:`check` first.
        """
        buckets = [b for _, _, b in self._applicable(tenant, sender, route, now)]
        if any(b.available(now) < 1 - _TOKEN_SLACK for b in buckets):
            return False
        for bucket in buckets:
            bucket.try_take(now, min(1.0, bucket.available(now)))
        return True

    def sweep(self, now: float) -> None:
        """Drop buckets that have refilled completely: a new bucket would start the same."""
        self._last_sweep = now
        full = [k for k, b in self._buckets.items() if b.available(now) >= b.burst]
        for key in full:
            del self._buckets[key]


# --- OTP -----------------------------------------------------------------------------------


class OtpGuard:
    """Limits on OTP requests, answered at once (HTTP 429) rather than deferred.

    An OTP is worthless minutes late, so these reject. Counts are per tenant: one user
    signing in to two services is fine, and one tenant's abused sign-up form must not lock out
    another tenant's users. Blocked prefixes hold for every tenant.

    - velocity: at most ``otp_per_number`` requests per number in any period;
    - cooldown: ``otp_resend_cooldown_s`` between two requests to one number;
    - SMS-pumping guard: at most ``otp_per_prefix`` requests per prefix of
      ``otp_prefix_length`` digits (fraudsters cycle through premium numbers of one range);
    - ``blocked_prefixes``: never.
    """

    __slots__ = (
        "_blocked",
        "_last",
        "_last_sweep",
        "_number_rate",
        "_per_number",
        "_per_prefix",
        "_prefix_rate",
        "cooldown_s",
        "prefix_length",
    )

    def __init__(
        self,
        per_number: Rate | None,
        cooldown_s: float = 0.0,
        per_prefix: Rate | None = None,
        prefix_length: int = 6,
        blocked_prefixes: Iterable[str] = (),
    ) -> None:
        self._per_number: _SlidingCounter[tuple[str, str]] | None = (
            None if per_number is None else _SlidingCounter(per_number.count, per_number.period_s)
        )
        self._per_prefix: _SlidingCounter[tuple[str, str]] | None = (
            None if per_prefix is None else _SlidingCounter(per_prefix.count, per_prefix.period_s)
        )
        self._number_rate = per_number
        self._prefix_rate = per_prefix
        self.cooldown_s = cooldown_s
        self.prefix_length = prefix_length
        self._blocked = tuple(blocked_prefixes)
        self._last: dict[tuple[str, str], float] = {}
        self._last_sweep = float("-inf")

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> OtpGuard:
        return cls(
            limits.otp_per_number,
            limits.otp_resend_cooldown_s,
            limits.otp_per_prefix,
            limits.otp_prefix_length,
            limits.blocked_prefixes,
        )

    def prefix_of(self, msisdn: str) -> str:
        """``+`` and the first ``prefix_length`` digits."""
        return "+" + msisdn.removeprefix("+")[: self.prefix_length]

    def blocked(self, msisdn: str) -> Verdict | None:
        """The rejection for a blocked destination, or None."""
        for prefix in self._blocked:
            if msisdn.startswith(prefix):
                return _reject(
                    f"destination {msisdn} is blocked (prefix {prefix})", "blocked_prefix"
                )
        return None

    def check(self, tenant: str, msisdn: str, now: float) -> Verdict:
        """Whether an OTP to ``msisdn`` may be accepted; :meth:`note` it if so."""
        refusal = self.blocked(msisdn)
        if refusal is not None:
            return refusal
        self._maybe_sweep(now)
        key = (tenant, msisdn)
        last = self._last.get(key)
        if last is not None and now < last + self.cooldown_s:
            until = last + self.cooldown_s
            return _reject(
                f"an OTP was sent to {msisdn} {now - last:.0f} s ago; "
                f"wait {self.cooldown_s:g} s between codes, retry after {_iso(until)}",
                "otp_cooldown",
                until,
            )
        if self._per_number is not None:
            free_at = self._per_number.free_at(key, now)
            if free_at is not None:
                return _reject(
                    f"OTP limit {self._number_rate} reached for {msisdn}, "
                    f"retry after {_iso(free_at)}",
                    "otp_velocity",
                    free_at,
                )
        if self._per_prefix is not None:
            prefix = self.prefix_of(msisdn)
            free_at = self._per_prefix.free_at((tenant, prefix), now)
            if free_at is not None:
                return _reject(
                    f"OTP limit {self._prefix_rate} reached for numbers "
                    f"starting {prefix} (SMS-pumping guard), retry after {_iso(free_at)}",
                    "prefix_guard",
                    free_at,
                )
        return SEND

    def note(self, tenant: str, msisdn: str, now: float) -> None:
        """Count an accepted OTP request."""
        key = (tenant, msisdn)
        self._last[key] = max(now, self._last.get(key, now))
        if self._per_number is not None:
            self._per_number.add(key, now)
        if self._per_prefix is not None:
            self._per_prefix.add((tenant, self.prefix_of(msisdn)), now)

    def _maybe_sweep(self, now: float) -> None:
        # The counters sweep themselves, on their own schedule, when consulted.
        if now - self._last_sweep >= _SWEEP_EVERY_S:
            self._last_sweep = now
            stale = [k for k, at in self._last.items() if now >= at + self.cooldown_s]
            for key in stale:
                del self._last[key]

    def sweep(self, now: float) -> None:
        """Forget requests that no longer limit anything at ``now``."""
        self._last_sweep = float("-inf")
        self._maybe_sweep(now)
        for counter in (self._per_number, self._per_prefix):
            if counter is not None:
                counter.sweep(now)

    def __len__(self) -> int:
        """Tracked keys (numbers in cooldown or counted, prefixes counted)."""
        return len(self._last) + sum(
            len(c) for c in (self._per_number, self._per_prefix) if c is not None
        )


# --- facade --------------------------------------------------------------------------------


class Policies:
    """Every policy, built from the settings, in the order the pipeline applies them.

    OTP is never held back by marketing-oriented limits (quiet hours, frequency caps) nor by
    the tenant and sender rates, which exist to pace bulk traffic: an OTP is worthless late.
    It is subject to the per-route rate, which protects the operator link every class shares.
    Transactional skips the marketing-only checks and is paced by all three rates.
    """

    __slots__ = ("_tenants", "consent", "frequency", "otp", "quiet_hours", "rates")

    def __init__(
        self,
        *,
        consent: ConsentPolicy,
        frequency: FrequencyCap | None,
        quiet_hours: QuietHoursPolicy,
        rates: RateLimits,
        otp: OtpGuard,
        tenants: Iterable[TenantConfig] = (),
    ) -> None:
        self.consent = consent
        self.frequency = frequency
        self.quiet_hours = quiet_hours
        self.rates = rates
        self.otp = otp
        self._tenants = {t.name: t for t in tenants}

    @classmethod
    def from_settings(cls, settings: Settings) -> Policies:
        limits = settings.limits
        rate = limits.marketing_per_recipient
        return cls(
            consent=ConsentPolicy(),
            frequency=None if rate is None else FrequencyCap(rate),
            quiet_hours=QuietHoursPolicy.from_config(settings.quiet_hours, settings.tenants),
            rates=RateLimits.from_config(limits, settings.tenants),
            otp=OtpGuard.from_config(limits),
            tenants=settings.tenants,
        )

    def _requires_opt_in(self, tenant: str) -> bool:
        config = self._tenants.get(tenant)
        # A tenant gone from the config keeps the safe default.
        return True if config is None else config.require_opt_in

    def at_accept(
        self,
        tenant_cfg: TenantConfig,
        klass: MessageClass,
        msisdn: str,
        sender: str | None,
        now: float,
    ) -> Verdict:
        """Refusals decided before a message is stored (the API answers them at once).

        Blocked prefixes hold for every class. Marketing needs consent; OTP must pass the
        velocity, cooldown and pumping guards. Nothing is counted here: after the store has
        committed an OTP, call :meth:`note_accepted`.
        """
        del sender  # part of the contract: sender policies may come to accept time
        refusal = self.otp.blocked(msisdn)
        if refusal is not None:
            return refusal
        if klass is MessageClass.MARKETING:
            return self.consent.check(tenant_cfg.require_opt_in, tenant_cfg.name, msisdn)
        if klass is MessageClass.OTP:
            return self.otp.check(tenant_cfg.name, msisdn, now)
        return SEND

    def note_accepted(self, tenant: str, klass: MessageClass, msisdn: str, now: float) -> None:
        """Count an accepted message against the OTP guards (other classes: nothing)."""
        if klass is MessageClass.OTP:
            self.otp.note(tenant, msisdn, now)

    def at_send(
        self,
        tenant: str,
        klass: MessageClass,
        msisdn: str,
        sender: str | None,
        route: str | None,
        now: float,
    ) -> Verdict:
        """Whether a stored message may go to the SMSC now.

        Order: consent (marketing; an opt-out known since accept rejects), quiet hours and the
        frequency cap (marketing), then rate limits. The first deferral is returned; the
        rest are checked again at its end. A ``send`` verdict has taken the rate tokens, so
        call this right before submitting; a marketing send is then counted with
        :meth:`note_marketing_sent` once the SMSC took it.
        """
        if klass is MessageClass.MARKETING:
            # Opt-in was checked at accept (against the store); here only an opt-out since then
            # stops it (the restore loads the ledger of the numbers it queues, so an opt-out
            # from before a restart counts too).
            verdict = self.consent.check(False, tenant, msisdn)
            if verdict.action == "send":
                verdict = self.quiet_hours.check(tenant, klass, msisdn, now)
            if verdict.action == "send" and self.frequency is not None:
                verdict = self.frequency.check(tenant, msisdn, now)
            if verdict.action != "send":
                return verdict
        if klass is MessageClass.OTP:
            tenant_scope: str | None = None
            sender_scope: str | None = None
        else:
            tenant_scope, sender_scope = tenant, sender
        verdict = self.rates.check(tenant_scope, sender_scope, route, now)
        if verdict.action == "send":
            self.rates.take(tenant_scope, sender_scope, route, now)
        return verdict

    def note_marketing_sent(self, tenant: str, msisdn: str, at: float) -> None:
        """Count a marketing message against the recipient's frequency cap."""
        if self.frequency is not None:
            self.frequency.note_sent(tenant, msisdn, at)
