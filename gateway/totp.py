"""Authenticator-app codes (RFC 6238 TOTP via pyotp): enrollment and replay-safe verification.

The server must compute codes, so it needs the secret itself, not a hash. Secrets are stored
*obfuscated* under the server key: the base32 secret XOR-ed with an HMAC-SHA256 keystream derived
from (key, tenant, user, a random per-enrollment nonce), plus an HMAC tag. This is a stream
cipher built from HMAC, not a vetted AEAD (we do not add a crypto dependency for one table). It
gives what we need: the database alone does not reveal any secret, a row copied to another
tenant or user does not decrypt, re-enrollment never reuses a keystream, and a changed key or a
tampered row is detected rather than producing wrong codes. Whoever holds the server key can
read every secret; protect it like the OTP HMAC key.

Replay protection (RFC 6238 §5.2): the last accepted time step is stored and a code whose step
is not later is refused, so each code (and each step) is accepted at most once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import pyotp

from gateway.otp import KeyedLock

__all__ = [
    "MemoryTotpStore",
    "TotpError",
    "TotpNotEnrolled",
    "TotpRecord",
    "TotpReplayed",
    "TotpSecretUnreadableError",
    "TotpService",
    "TotpStore",
    "TotpWrongCode",
    "open_secret",
    "seal_secret",
]

logger = logging.getLogger(__name__)

_VERSION = b"\x01"
_NONCE_BYTES = 16
_TAG_BYTES = 16
_DIGITS = 6
_CODE_RE = re.compile(r"[0-9]{6}", re.ASCII)
_VALID_WINDOW = 1  # one step either side: clock drift and the seconds it takes to type


@dataclass(frozen=True, slots=True)
class TotpRecord:
    """One user's enrollment. ``secret_enc`` is version | nonce | obfuscated secret | tag."""

    tenant: str
    user: str
    secret_enc: bytes = field(repr=False)
    last_step: int | None = None


class TotpStore(Protocol):
    """What the service needs from a store: one record per (tenant, user)."""

    async def get_totp(self, tenant: str, user: str) -> TotpRecord | None: ...

    async def put_totp(self, record: TotpRecord) -> None:
        """Insert or replace the record of ``(record.tenant, record.user)``."""
        ...


class MemoryTotpStore:
    """A ``TotpStore`` in a dict: tests and single-instance use (lost at restart)."""

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], TotpRecord] = {}

    async def get_totp(self, tenant: str, user: str) -> TotpRecord | None:
        return self._records.get((tenant, user))

    async def put_totp(self, record: TotpRecord) -> None:
        self._records[(record.tenant, record.user)] = record


class TotpError(Exception):
    """A verification that did not succeed; ``code`` is stable and machine-readable."""

    code = "totp_error"

    def __init__(self, user: str, detail: str) -> None:
        super().__init__(detail)
        self.user = user
        self.detail = detail


class TotpNotEnrolled(TotpError):  # noqa: N818
    """The user has no authenticator enrolled with this tenant."""

    code = "totp_not_enrolled"


class TotpWrongCode(TotpError):  # noqa: N818
    """The code matches no step in the accepted window."""

    code = "totp_wrong_code"


class TotpReplayed(TotpError):  # noqa: N818
    """The code is for a step already used (or earlier); each step is accepted once."""

    code = "totp_replayed"


class TotpSecretUnreadableError(RuntimeError):
    """A stored secret fails its integrity check: the server key changed or the row was altered.

    A server-side fault, not the caller's: deliberately not a ``TotpError``.
    """


def _field(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "big") + raw


def _context(tenant: str, user: str, nonce: bytes) -> bytes:
    return _field(tenant) + _field(user) + nonce


def _keystream(key: bytes, context: bytes, size: int) -> bytes:
    """HMAC-SHA256 in counter mode: block i = HMAC(key, label | context | i)."""
    blocks = []
    for counter in range((size + 31) // 32):
        message = b"ulak-totp-stream-v1" + context + counter.to_bytes(4, "big")
        blocks.append(hmac.new(key, message, hashlib.sha256).digest())
    return b"".join(blocks)[:size]


def _tag(key: bytes, context: bytes, body: bytes) -> bytes:
    message = b"ulak-totp-tag-v1" + context + body
    return hmac.new(key, message, hashlib.sha256).digest()[:_TAG_BYTES]


def seal_secret(key: bytes, tenant: str, user: str, secret: str) -> bytes:
    """Obfuscate a base32 secret for storage (see the module docstring for what it protects)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    context = _context(tenant, user, nonce)
    plain = secret.encode("ascii")
    body = bytes(a ^ b for a, b in zip(plain, _keystream(key, context, len(plain)), strict=True))
    return _VERSION + nonce + body + _tag(key, context, body)


def open_secret(key: bytes, tenant: str, user: str, sealed: bytes) -> str:
    """The base32 secret back from ``seal_secret``'s output.

    Raises:
        TotpSecretUnreadableError: wrong key, wrong tenant/user, or altered bytes.
    """
    head = len(_VERSION) + _NONCE_BYTES
    if len(sealed) < head + _TAG_BYTES or sealed[:1] != _VERSION:
        raise TotpSecretUnreadableError(f"stored TOTP secret of {user!r} has an unknown format")
    nonce, body, tag = sealed[1:head], sealed[head:-_TAG_BYTES], sealed[-_TAG_BYTES:]
    context = _context(tenant, user, nonce)
    if not hmac.compare_digest(tag, _tag(key, context, body)):
        raise TotpSecretUnreadableError(
            f"stored TOTP secret of {user!r} fails its check (server key changed or row altered)"
        )
    plain = bytes(a ^ b for a, b in zip(body, _keystream(key, context, len(body)), strict=True))
    return plain.decode("ascii")


class TotpService:
    """Enrolls authenticator apps and verifies their codes, each time step at most once.

    Args:
        store: where enrollments live.
        issuer: shown in the app next to the account (no ``:``, it separates the label).
        key: the server key that obfuscates stored secrets (at least 16 bytes).
        clock: wall-clock seconds since the epoch; TOTP steps are computed from it.
    """

    def __init__(
        self,
        store: TotpStore,
        issuer: str,
        key: bytes,
        *,
        clock: Callable[[], float],
    ) -> None:
        if len(key) < 16:
            raise ValueError(f"the TOTP key must be at least 16 bytes, got {len(key)}")
        if not issuer or ":" in issuer:
            raise ValueError(f"issuer must be non-empty and contain no ':', got {issuer!r}")
        self._store = store
        self._issuer = issuer
        self._key = key
        self._clock = clock
        self._locks: KeyedLock[tuple[str, str]] = KeyedLock()

    def __repr__(self) -> str:
        return f"<TotpService issuer={self._issuer!r}>"

    async def enroll(self, tenant: str, user: str) -> str:
        """Create (or replace) the user's secret and return the ``otpauth://totp/`` URI.

        Re-enrolling replaces the old secret: the previous app stops working.

        Returns:
            The provisioning URI (to show as a QR code); it contains the secret, so the caller
            must not log it.

        Raises:
            ValueError: ``user`` is empty or contains ``:`` (it would break the URI label).
        """
        if not user or ":" in user:
            raise ValueError(f"user must be non-empty and contain no ':', got {user!r}")
        secret = pyotp.random_base32()
        record = TotpRecord(tenant, user, seal_secret(self._key, tenant, user, secret))
        async with self._locks.hold((tenant, user)):
            await self._store.put_totp(record)
        logger.info("totp enrolled tenant=%s user=%s", tenant, user)
        return pyotp.TOTP(secret, digits=_DIGITS).provisioning_uri(
            name=user, issuer_name=self._issuer
        )

    async def verify(self, tenant: str, user: str, code: str) -> None:
        """Accept a code for the current step ±1, once; return on success, raise otherwise.

        Raises:
            TotpNotEnrolled: no enrollment for this tenant and user.
            TotpReplayed: the code's step is not later than the last accepted one.
            TotpWrongCode: the code matches no step in the window (malformed codes included).
            TotpSecretUnreadableError: the stored secret cannot be read with this key.
        """
        async with self._locks.hold((tenant, user)):
            record = await self._store.get_totp(tenant, user)
            if record is None:
                logger.info("totp verify tenant=%s user=%s: not enrolled", tenant, user)
                raise TotpNotEnrolled(user, "no authenticator is enrolled for this user")
            totp = pyotp.TOTP(open_secret(self._key, tenant, user, record.secret_enc))
            step = _matching_step(totp, code, self._clock())
            if step is None:
                logger.info("totp verify tenant=%s user=%s: wrong code", tenant, user)
                raise TotpWrongCode(user, "wrong code")
            if record.last_step is not None and step <= record.last_step:
                logger.info("totp verify tenant=%s user=%s: replayed", tenant, user)
                raise TotpReplayed(user, "this code was already used; wait for the next one")
            await self._store.put_totp(replace(record, last_step=step))
            logger.info("totp verify tenant=%s user=%s: verified", tenant, user)


def _matching_step(totp: pyotp.TOTP, code: str, now: float) -> int | None:
    """The step in ``now``'s window whose code equals ``code``, or None.

    Every step in the window is compared (constant time each), whatever the input looks like,
    and the latest matching step wins so that a later step is never shadowed by an earlier one.
    """
    candidate = code if isinstance(code, str) and _CODE_RE.fullmatch(code) else "-" * _DIGITS
    current = totp.timecode(now)
    found: int | None = None
    for step in range(current - _VALID_WINDOW, current + _VALID_WINDOW + 1):
        if hmac.compare_digest(candidate, totp.generate_otp(step)):
            found = step
    return found
