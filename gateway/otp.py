"""SMS one-time codes: issue a random code, keep only its keyed hash, verify it once.

Codes come from ``secrets`` rather than TOTP (DESIGN §6): a resend within one TOTP step would
repeat the code, and a random code carries no state an attacker could predict. The store keeps
``HMAC-SHA256(server key, tenant | request_id | code)``, so a copy of the database alone cannot
be brute-forced over the small code space, and a hash is bound to its tenant and request.

The plain code leaves this module only inside ``IssuedOtp.text`` (the SMS to send). It is never
logged, never part of a ``repr``, never stored.

No HTTP here: the API layer maps each ``OtpError`` subclass (by its ``code``) to a problem
answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Generic, Protocol, TypeVar

import trio

from gateway.config import OtpConfig
from queues.model import OtpRecord

__all__ = [
    "MAX_LENGTH",
    "MAX_TTL_S",
    "MIN_LENGTH",
    "MIN_TTL_S",
    "SUGGESTED_TEMPLATES",
    "TEMPLATE_EN",
    "TEMPLATE_TR",
    "IssuedOtp",
    "KeyedLock",
    "OtpError",
    "OtpExpired",
    "OtpNotFound",
    "OtpService",
    "OtpStore",
    "OtpTooManyAttempts",
    "OtpUsed",
    "OtpWrongCode",
    "check_template",
]

logger = logging.getLogger(__name__)

MIN_TTL_S = 60
MAX_TTL_S = 600
MIN_LENGTH = 4
MAX_LENGTH = 8

# Suggested wording (from the product issue). The service renders the *configured* templates
# (``[otp.templates]``); these document what we recommend operators put there.
TEMPLATE_TR = "Doğrulama kodunuz: {code}. Bu kodu kimseyle paylaşmayın."
TEMPLATE_EN = "Your verification code: {code}. Do not share it with anyone."
SUGGESTED_TEMPLATES = {"tr": TEMPLATE_TR, "en": TEMPLATE_EN}

_TEMPLATE_FIELDS = frozenset({"code", "minutes"})
# ASCII digits only: str.isdigit() would also accept other scripts' digits ("٣").
_CODE_RE = re.compile(rf"[0-9]{{{MIN_LENGTH},{MAX_LENGTH}}}", re.ASCII)
# Longer input is certainly wrong; hashing a bounded prefix keeps the work per attempt bounded.
_MAX_HASHED_CHARS = 64


class OtpStore(Protocol):
    """What the service needs from a store (``queues.store`` implements it)."""

    async def put_otp(self, record: OtpRecord) -> None: ...

    async def get_otp(self, tenant: str, request_id: str) -> OtpRecord | None:
        """The tenant's record, or None (also for another tenant's ``request_id``)."""
        ...

    async def update_otp(self, record: OtpRecord) -> None: ...


class OtpError(Exception):
    """A verification that did not succeed; ``code`` is stable and machine-readable."""

    code = "otp_error"
    # Subclasses are named for the outcome (OtpExpired, not OtpExpiredError): the names are
    # the API layer's contract, and the base already says "error" (hence the N818 waivers).

    def __init__(self, request_id: str, detail: str) -> None:
        super().__init__(detail)
        self.request_id = request_id
        self.detail = detail


class OtpNotFound(OtpError):  # noqa: N818
    """No such request for this tenant (another tenant's request looks the same)."""

    code = "otp_not_found"


class OtpExpired(OtpError):  # noqa: N818
    """The request's lifetime has passed."""

    code = "otp_expired"


class OtpUsed(OtpError):  # noqa: N818
    """The code was already verified once; codes are single use."""

    code = "otp_used"


class OtpTooManyAttempts(OtpError):  # noqa: N818
    """The attempt limit is spent; even the right code is refused now."""

    code = "otp_too_many_attempts"


class OtpWrongCode(OtpError):  # noqa: N818
    """The code does not match; ``attempts_left`` more tries are allowed."""

    code = "otp_wrong_code"

    def __init__(self, request_id: str, detail: str, attempts_left: int) -> None:
        super().__init__(request_id, detail)
        self.attempts_left = attempts_left


@dataclass(frozen=True, slots=True)
class IssuedOtp:
    """A new request: what the caller gets back and the SMS to send.

    ``text`` holds the code, so it is kept out of ``repr`` (and thus out of logs and
    tracebacks that show locals).
    """

    request_id: str
    tenant: str
    msisdn: str
    expires_at: float
    text: str = field(repr=False)


K = TypeVar("K", bound=Hashable)


class _Slot:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0


class KeyedLock(Generic[K]):
    """One ``trio.Lock`` per key, created on demand and dropped when nobody holds or waits.

    Verification reads a record, counts the attempt and writes it back; without this, concurrent
    guesses on one request would all read the same count and exceed the attempt limit (or a
    right code could be accepted twice). It serialises only within this process: several
    instances need the store to make the update atomic as well.
    """

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[K, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[key]


def check_template(template: str) -> str:
    """Reject a template without ``{code}`` or with placeholders other than code and minutes.

    Raises:
        ValueError: with the reason.
    """
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"template is not valid ({exc}); write a literal brace as {{{{") from None
    unknown = sorted(names - _TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"template has unknown placeholder {{{unknown[0]}}}")
    if "code" not in names:
        raise ValueError("template must contain {code}")
    return template


def _field(value: str) -> bytes:
    """Length-prefixed, so no choice of tenant name can make two inputs collide."""
    raw = value.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "big") + raw


def _code_hash(key: bytes, tenant: str, request_id: str, code: str) -> bytes:
    message = b"ulak-otp-v1" + _field(tenant) + _field(request_id) + _field(code)
    return hmac.new(key, message, hashlib.sha256).digest()


def _mask(msisdn: str) -> str:
    """Enough of a number to follow a log, not enough to identify a person."""
    return "*" * max(0, len(msisdn) - 2) + msisdn[-2:]


class OtpService:
    """Issues and verifies SMS codes against an ``OtpStore``.

    Args:
        store: where requests live (tenant-scoped lookups).
        config: ``[otp]`` defaults, limits and templates.
        key: the server's HMAC key (at least 16 bytes); changing it voids pending codes.
        clock: wall-clock seconds since the epoch (``expires_at`` is absolute); tests inject it.
    """

    def __init__(
        self,
        store: OtpStore,
        config: OtpConfig,
        key: bytes,
        *,
        clock: Callable[[], float],
    ) -> None:
        if len(key) < 16:
            raise ValueError(f"the OTP key must be at least 16 bytes, got {len(key)}")
        self._store = store
        self._config = config
        self._key = key
        self._clock = clock
        self._locks: KeyedLock[tuple[str, str]] = KeyedLock()

    def __repr__(self) -> str:
        return f"<OtpService ttl_s={self._config.ttl_s} length={self._config.length}>"

    def _template(self, template: str | None, language: str | None) -> str:
        if template is not None:
            return check_template(template)
        lang = self._config.default_language if language is None else language
        templates = self._config.templates
        if lang in templates:
            return templates[lang]
        primary = lang.split("-", 1)[0].lower()  # "tr-TR" falls back to "tr"
        if primary in templates:
            return templates[primary]
        known = ", ".join(sorted(templates))
        raise ValueError(f"no OTP template for language {lang!r} (configured: {known})")

    async def issue(
        self,
        tenant: str,
        msisdn: str,
        *,
        ttl_s: int | None = None,
        length: int | None = None,
        template: str | None = None,
        language: str | None = None,
    ) -> IssuedOtp:
        """Create a request and the SMS text that carries its code.

        Args:
            tenant: the owning tenant; only it can verify the request.
            msisdn: the recipient (stored for audit; not validated here).
            ttl_s: lifetime in seconds, 60–600 (default ``[otp] ttl_s``).
            length: digits in the code, 4–8 (default ``[otp] length``).
            template: text with ``{code}`` and optionally ``{minutes}``; overrides ``language``.
            language: picks a configured template (default ``[otp] default_language``).

        Returns:
            The request id, its expiry and the text to send. The code is only in the text.

        Raises:
            ValueError: a parameter is out of range or the template is unusable.
        """
        ttl = self._config.ttl_s if ttl_s is None else ttl_s
        digits = self._config.length if length is None else length
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL_S <= ttl <= MAX_TTL_S:
            raise ValueError(
                f"ttl_s must be an integer from {MIN_TTL_S} to {MAX_TTL_S}, got {ttl!r}"
            )
        if (
            isinstance(digits, bool)
            or not isinstance(digits, int)
            or not MIN_LENGTH <= digits <= MAX_LENGTH
        ):
            raise ValueError(
                f"length must be an integer from {MIN_LENGTH} to {MAX_LENGTH}, got {digits!r}"
            )
        chosen = self._template(template, language)

        # randbelow over the whole range, then pad: every code (leading zeros included) is
        # equally likely, unlike drawing a first digit from 1–9.
        code = str(secrets.randbelow(10**digits)).zfill(digits)
        # Whole minutes rounded down: the SMS never promises more time than the code has.
        text = chosen.format(code=code, minutes=ttl // 60)
        request_id = secrets.token_urlsafe(16)
        now = self._clock()
        record = OtpRecord(
            request_id=request_id,
            tenant=tenant,
            msisdn=msisdn,
            code_hash=_code_hash(self._key, tenant, request_id, code),
            created_at=now,
            expires_at=now + ttl,
        )
        await self._store.put_otp(record)
        logger.info(
            "otp issued tenant=%s request_id=%s to=%s ttl_s=%d length=%d",
            tenant,
            request_id,
            _mask(msisdn),
            ttl,
            digits,
        )
        return IssuedOtp(
            request_id=request_id,
            tenant=tenant,
            msisdn=msisdn,
            expires_at=record.expires_at,
            text=text,
        )

    async def verify(self, tenant: str, request_id: str, code: str) -> None:
        """Check a code; return on success, raise otherwise.

        Every attempt on an existing request is counted and stored before the answer, so a
        crash or a cancelled caller cannot hand out free guesses. The comparison is constant
        time; a malformed code is hashed and compared like any other and simply fails.

        Raises:
            OtpNotFound: no such request for this tenant.
            OtpUsed: the request was verified before.
            OtpExpired: the request's lifetime has passed.
            OtpTooManyAttempts: ``max_attempts`` wrong codes were tried already.
            OtpWrongCode: the code does not match (``attempts_left`` says how many remain).
        """
        async with self._locks.hold((tenant, request_id)):
            await self._verify_locked(tenant, request_id, code)

    async def _verify_locked(self, tenant: str, request_id: str, code: str) -> None:
        record = await self._store.get_otp(tenant, request_id)
        # The tenant check repeats the store's scoping on purpose: a store bug must not let one
        # tenant verify another's request.
        if record is None or record.tenant != tenant:
            logger.info("otp verify tenant=%s request_id=%s: not found", tenant, request_id)
            raise OtpNotFound(request_id, "no OTP request with this id for this tenant")

        now = self._clock()
        attempts = record.attempts + 1
        candidate = code[:_MAX_HASHED_CHARS] if isinstance(code, str) else ""
        well_formed = _CODE_RE.fullmatch(candidate) is not None
        matches = hmac.compare_digest(
            _code_hash(self._key, tenant, request_id, candidate), record.code_hash
        )
        # Decide before writing, write before answering.
        error: OtpError | None = None
        if record.used_at is not None:
            error = OtpUsed(request_id, "this code was already used; request a new one")
        elif now >= record.expires_at:
            error = OtpExpired(request_id, "this code has expired; request a new one")
        elif record.attempts >= self._config.max_attempts:
            error = OtpTooManyAttempts(
                request_id,
                f"too many attempts (limit {self._config.max_attempts}); request a new code",
            )
        elif not (matches and well_formed):
            left = max(0, self._config.max_attempts - attempts)
            error = OtpWrongCode(request_id, f"wrong code; {left} attempts left", left)

        used_at = now if error is None else record.used_at
        await self._store.update_otp(replace(record, attempts=attempts, used_at=used_at))
        outcome = "verified" if error is None else error.code
        logger.info(
            "otp verify tenant=%s request_id=%s attempt=%d: %s",
            tenant,
            request_id,
            attempts,
            outcome,
        )
        if error is not None:
            raise error
