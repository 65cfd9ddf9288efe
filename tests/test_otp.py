"""SMS codes (gateway.otp) and authenticator-app TOTP (gateway.totp), with injected clocks."""

from __future__ import annotations

import logging
import re
from collections import Counter
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import OtpConfig
from gateway.otp import (
    TEMPLATE_EN,
    TEMPLATE_TR,
    IssuedOtp,
    KeyedLock,
    OtpError,
    OtpExpired,
    OtpNotFound,
    OtpService,
    OtpTooManyAttempts,
    OtpUsed,
    OtpWrongCode,
)
from gateway.totp import (
    MemoryTotpStore,
    TotpNotEnrolled,
    TotpRecord,
    TotpReplayed,
    TotpSecretUnreadableError,
    TotpService,
    TotpWrongCode,
    open_secret,
    seal_secret,
)
from queues.model import OtpRecord

KEY = b"test-server-key-0123456789abcdef"
T0 = 1_700_000_000.0  # a multiple of 30: TOTP step boundaries fall on round offsets


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MemoryOtpStore:
    """Tenant-scoped like the real stores (whose contract tests live elsewhere)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], OtpRecord] = {}
        self.updates = 0

    async def put_otp(self, record: OtpRecord) -> None:
        self.records[(record.tenant, record.request_id)] = record

    async def get_otp(self, tenant: str, request_id: str) -> OtpRecord | None:
        return self.records.get((tenant, request_id))

    async def update_otp(self, record: OtpRecord) -> None:
        assert (record.tenant, record.request_id) in self.records
        self.updates += 1
        self.records[(record.tenant, record.request_id)] = record


def make_otp(**config: object) -> tuple[OtpService, MemoryOtpStore, FakeClock]:
    store, clock = MemoryOtpStore(), FakeClock()
    return OtpService(store, OtpConfig.model_validate(config), KEY, clock=clock), store, clock


def code_of(issued: IssuedOtp) -> str:
    match = re.search(r"\b[0-9]{4,8}\b", issued.text)
    assert match is not None, "no code in the text"
    return match.group()


def wrong(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


# --- SMS codes: issue --------------------------------------------------------------------------


async def test_issue_renders_configured_template_and_stores_record() -> None:
    otp, store, _ = make_otp()
    issued = await otp.issue("shop", "+905551234567")
    code = code_of(issued)
    assert issued.text == f"Your code is {code}. It expires in 3 minutes."
    assert issued.expires_at == T0 + 180
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", issued.request_id)
    record = store.records[("shop", issued.request_id)]
    assert (record.msisdn, record.created_at, record.expires_at) == ("+905551234567", T0, T0 + 180)
    assert (record.attempts, record.used_at) == (0, None)


async def test_issue_language_template_override_and_minutes() -> None:
    otp, _, _ = make_otp()
    tr = await otp.issue("shop", "+905551234567", language="tr", ttl_s=300)
    assert re.fullmatch(r"Doğrulama kodunuz [0-9]{6}\. 5 dakika geçerlidir\.", tr.text)
    regional = await otp.issue("shop", "+905551234567", language="tr-TR")
    assert regional.text.startswith("Doğrulama kodunuz ")
    # 90 s is promised as 1 minute: the text never claims more time than the code has.
    own = await otp.issue("shop", "+1", template="{code} ({minutes} min)", ttl_s=90, length=4)
    assert re.fullmatch(r"[0-9]{4} \(1 min\)", own.text)
    suggested = await otp.issue("shop", "+1", template=TEMPLATE_TR)
    assert re.fullmatch(
        r"Doğrulama kodunuz: [0-9]{6}\. Bu kodu kimseyle paylaşmayın\.", suggested.text
    )
    assert TEMPLATE_EN == "Your verification code: {code}. Do not share it with anyone."


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_s": 59}, "ttl_s must be an integer from 60 to 600, got 59"),
        ({"ttl_s": 601}, "ttl_s must be an integer from 60 to 600, got 601"),
        ({"ttl_s": True}, "ttl_s must be an integer from 60 to 600, got True"),
        ({"length": 3}, "length must be an integer from 4 to 8, got 3"),
        ({"length": 9}, "length must be an integer from 4 to 8, got 9"),
        ({"template": "no code here"}, "template must contain {code}"),
        ({"template": "{code} {user}"}, "template has unknown placeholder {user}"),
        ({"template": "{code"}, "template is not valid"),
        ({"language": "de"}, "no OTP template for language 'de' (configured: en, tr)"),
    ],
)
async def test_issue_rejects_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    otp, store, _ = make_otp()
    with pytest.raises(ValueError, match=re.escape(message)):
        await otp.issue("shop", "+905551234567", **kwargs)  # type: ignore[arg-type]
    assert store.records == {}


@settings(max_examples=10)
@given(length=st.integers(min_value=4, max_value=8))
def test_codes_are_uniform_digits_of_the_requested_length(length: int) -> None:
    async def main() -> Counter[tuple[int, str]]:
        otp, _, _ = make_otp()
        seen: Counter[tuple[int, str]] = Counter()
        for _ in range(1000):
            code = (await otp.issue("shop", "+1", length=length, template="<{code}>")).text[1:-1]
            assert re.fullmatch(rf"[0-9]{{{length}}}", code), code
            seen.update(enumerate(code))
        return seen

    seen = trio.run(main)
    # 1000 draws per position: each digit expects 100 (sd ~9.5); 40..160 is over 6 sd wide, so
    # this fails only for a real bias, e.g. a first digit never 0 (no zero padding).
    for position in range(length):
        for digit in "0123456789":
            assert 40 <= seen[(position, digit)] <= 160, (position, digit, seen[(position, digit)])


async def test_stored_hash_is_not_the_code() -> None:
    otp, store, _ = make_otp(length=8)
    issued = await otp.issue("shop", "+905551234567")
    code = code_of(issued)
    record = store.records[("shop", issued.request_id)]
    assert len(record.code_hash) == 32
    assert code.encode() not in record.code_hash
    assert code not in repr(record)
    # Keyed: the same code under another request id hashes differently (no shared table).
    other = await otp.issue("shop", "+905551234567")
    assert store.records[("shop", other.request_id)].code_hash != record.code_hash


# --- SMS codes: verify -------------------------------------------------------------------------


async def test_right_code_verifies_once() -> None:
    otp, store, clock = make_otp()
    issued = await otp.issue("shop", "+905551234567")
    clock.now += 10
    await otp.verify("shop", issued.request_id, code_of(issued))
    record = store.records[("shop", issued.request_id)]
    assert (record.attempts, record.used_at) == (1, T0 + 10)
    with pytest.raises(OtpUsed) as used:
        await otp.verify("shop", issued.request_id, code_of(issued))
    assert used.value.code == "otp_used"
    assert used.value.request_id == issued.request_id


async def test_wrong_code_then_right() -> None:
    otp, store, _ = make_otp(max_attempts=3)
    issued = await otp.issue("shop", "+905551234567")
    code = code_of(issued)
    with pytest.raises(OtpWrongCode) as first:
        await otp.verify("shop", issued.request_id, wrong(code))
    assert (first.value.code, first.value.attempts_left) == ("otp_wrong_code", 2)
    assert str(first.value) == "wrong code; 2 attempts left"
    assert store.records[("shop", issued.request_id)].attempts == 1
    await otp.verify("shop", issued.request_id, code)


@pytest.mark.parametrize(
    "bad", ["", "12345", "1234567", "12345a", " 123456", "١٢٣٤٥٦", "9" * 10000]
)
async def test_malformed_codes_are_wrong_and_counted(bad: str) -> None:
    otp, store, _ = make_otp()
    issued = await otp.issue("shop", "+905551234567")
    with pytest.raises(OtpWrongCode):
        await otp.verify("shop", issued.request_id, bad)
    assert store.records[("shop", issued.request_id)].attempts == 1
    await otp.verify("shop", issued.request_id, code_of(issued))


async def test_expired() -> None:
    otp, store, clock = make_otp()
    issued = await otp.issue("shop", "+905551234567", ttl_s=60)
    clock.now = T0 + 59.999
    with pytest.raises(OtpWrongCode):
        await otp.verify("shop", issued.request_id, wrong(code_of(issued)))
    clock.now = T0 + 60
    with pytest.raises(OtpExpired) as expired:
        await otp.verify("shop", issued.request_id, code_of(issued))
    assert expired.value.code == "otp_expired"
    record = store.records[("shop", issued.request_id)]
    assert (record.attempts, record.used_at) == (2, None)


async def test_too_many_attempts_refuses_even_the_right_code() -> None:
    otp, store, _ = make_otp(max_attempts=3)
    issued = await otp.issue("shop", "+905551234567")
    code = code_of(issued)
    lefts = []
    for _ in range(3):
        with pytest.raises(OtpWrongCode) as caught:
            await otp.verify("shop", issued.request_id, wrong(code))
        lefts.append(caught.value.attempts_left)
    assert lefts == [2, 1, 0]
    for _ in range(2):
        with pytest.raises(OtpTooManyAttempts) as locked:
            await otp.verify("shop", issued.request_id, code)
        assert locked.value.code == "otp_too_many_attempts"
    record = store.records[("shop", issued.request_id)]
    assert (record.attempts, record.used_at) == (5, None)
    assert store.updates == 5  # every attempt stored before its answer


async def test_concurrent_guesses_do_not_exceed_the_limit() -> None:
    otp, store, _ = make_otp(max_attempts=5)
    issued = await otp.issue("shop", "+905551234567")
    bad = wrong(code_of(issued))
    outcomes: list[str] = []

    real_get = store.get_otp

    async def slow_get(tenant: str, request_id: str) -> OtpRecord | None:
        record = await real_get(tenant, request_id)
        await trio.sleep(0)  # let other verifiers run between this read and the write
        return record

    store.get_otp = slow_get  # type: ignore[method-assign]

    async def guess() -> None:
        try:
            await otp.verify("shop", issued.request_id, bad)
        except OtpError as exc:
            outcomes.append(exc.code)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(guess)
    assert Counter(outcomes) == {"otp_wrong_code": 5, "otp_too_many_attempts": 15}
    assert store.records[("shop", issued.request_id)].attempts == 20
    assert len(otp._locks) == 0  # no lock left behind


async def test_another_tenants_request_is_not_found() -> None:
    otp, store, _ = make_otp()
    issued = await otp.issue("shop", "+905551234567")
    with pytest.raises(OtpNotFound) as missing:
        await otp.verify("bank", issued.request_id, code_of(issued))
    assert missing.value.code == "otp_not_found"
    with pytest.raises(OtpNotFound):
        await otp.verify("shop", "no-such-request", "123456")
    assert store.records[("shop", issued.request_id)].attempts == 0
    await otp.verify("shop", issued.request_id, code_of(issued))


async def test_a_store_ignoring_the_tenant_is_still_not_found() -> None:
    """Defence in depth: a store bug must not let one tenant verify another's request."""
    otp, store, _ = make_otp()
    issued = await otp.issue("shop", "+905551234567")

    async def leaky_get(tenant: str, request_id: str) -> OtpRecord | None:
        return store.records[("shop", request_id)]

    store.get_otp = leaky_get  # type: ignore[method-assign]
    with pytest.raises(OtpNotFound):
        await otp.verify("bank", issued.request_id, code_of(issued))


async def test_code_never_in_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    otp, store, _ = make_otp(length=8)
    issued = await otp.issue("shop", "+905551234567")
    code = code_of(issued)
    with pytest.raises(OtpWrongCode) as caught:
        await otp.verify("shop", issued.request_id, wrong(code))
    await otp.verify("shop", issued.request_id, code)
    with pytest.raises(OtpUsed) as used:
        await otp.verify("shop", issued.request_id, code)
    assert caplog.records, "issue and verify should log"
    texts = [caplog.text, repr(issued), str(issued), repr(otp)]
    texts += [repr(r) for r in store.records.values()]
    texts += [repr(caught.value), str(caught.value), repr(used.value), str(used.value)]
    for text in texts:
        assert code not in text
        assert issued.text not in text
    assert "+905551234567" not in caplog.text  # numbers are masked in logs
    assert issued.request_id in caplog.text


async def test_keyed_lock_drops_entries_after_cancelled_waiter() -> None:
    locks: KeyedLock[str] = KeyedLock()

    async def waiter() -> None:
        async with locks.hold("a"):
            raise AssertionError("the lock is held; the waiter must not get it")

    async with locks.hold("a"), trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert len(locks) == 1
        nursery.cancel_scope.cancel()
    assert len(locks) == 0


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        OtpService(MemoryOtpStore(), OtpConfig(), b"short", clock=FakeClock())
    with pytest.raises(ValueError, match="at least 16 bytes"):
        TotpService(MemoryTotpStore(), "Ulak", b"short", clock=FakeClock())


# --- TOTP ----------------------------------------------------------------------------------------


def make_totp() -> tuple[TotpService, MemoryTotpStore, FakeClock]:
    store, clock = MemoryTotpStore(), FakeClock()
    return TotpService(store, "Ulak Shop", KEY, clock=clock), store, clock


def secret_of(uri: str) -> str:
    return parse_qs(urlparse(uri).query)["secret"][0]


async def test_enroll_returns_otpauth_uri_with_issuer() -> None:
    totp, _, _ = make_totp()
    uri = await totp.enroll("shop", "alice@example.com")
    parsed = urlparse(uri)
    assert (parsed.scheme, parsed.netloc) == ("otpauth", "totp")
    assert unquote(parsed.path) == "/Ulak Shop:alice@example.com"
    query = parse_qs(parsed.query)
    assert query["issuer"] == ["Ulak Shop"]
    assert re.fullmatch(r"[A-Z2-7]{32}", query["secret"][0])
    parsed_back = pyotp.parse_uri(uri)
    assert isinstance(parsed_back, pyotp.TOTP)
    assert (parsed_back.issuer, parsed_back.name) == ("Ulak Shop", "alice@example.com")


async def test_stored_secret_does_not_contain_the_secret() -> None:
    totp, store, _ = make_totp()
    secret = secret_of(await totp.enroll("shop", "alice"))
    record = await store.get_totp("shop", "alice")
    assert record is not None
    assert secret.encode() not in record.secret_enc
    assert secret not in repr(record)
    assert open_secret(KEY, "shop", "alice", record.secret_enc) == secret
    # Bound to key, tenant and user; tampering is detected.
    for key, tenant, user, sealed in [
        (b"another-key-0123456789abcdef", "shop", "alice", record.secret_enc),
        (KEY, "bank", "alice", record.secret_enc),
        (KEY, "shop", "bob", record.secret_enc),
        (KEY, "shop", "alice", record.secret_enc[:-1] + bytes([record.secret_enc[-1] ^ 1])),
        (KEY, "shop", "alice", b"\x02" + record.secret_enc[1:]),
    ]:
        with pytest.raises(TotpSecretUnreadableError):
            open_secret(key, tenant, user, sealed)
    # A fresh nonce per sealing: re-enrolling never reuses a keystream.
    assert seal_secret(KEY, "shop", "alice", secret) != seal_secret(KEY, "shop", "alice", secret)


async def test_totp_code_verifies_once_then_replayed() -> None:
    totp, store, clock = make_totp()
    secret = secret_of(await totp.enroll("shop", "alice"))
    clock.now = T0 + 5
    code = pyotp.TOTP(secret).at(clock.now)
    await totp.verify("shop", "alice", code)
    with pytest.raises(TotpReplayed) as replayed:
        await totp.verify("shop", "alice", code)
    assert replayed.value.code == "totp_replayed"
    record = await store.get_totp("shop", "alice")
    assert record is not None and record.last_step == int(T0 // 30)


async def test_totp_window_and_steps() -> None:
    totp, _, clock = make_totp()
    gen = pyotp.TOTP(secret_of(await totp.enroll("shop", "alice")))
    clock.now = T0 + 5
    # Two steps old: outside valid_window=1.
    with pytest.raises(TotpWrongCode) as old:
        await totp.verify("shop", "alice", gen.at(T0 - 60))
    assert old.value.code == "totp_wrong_code"
    # The previous step is still accepted (drift, typing time)...
    await totp.verify("shop", "alice", gen.at(T0 - 30))
    # ...then the current one, then the next one (a fast clock on the phone).
    await totp.verify("shop", "alice", gen.at(T0))
    await totp.verify("shop", "alice", gen.at(T0 + 30))
    # After the next step was used, the current step's code is a replay.
    with pytest.raises(TotpReplayed):
        await totp.verify("shop", "alice", gen.at(T0))
    # Time moves on: a code two steps ahead of the old "now" is the new next-but-current.
    clock.now = T0 + 65
    await totp.verify("shop", "alice", gen.at(T0 + 60))


async def test_totp_skipping_ahead_retires_earlier_steps() -> None:
    totp, _, clock = make_totp()
    gen = pyotp.TOTP(secret_of(await totp.enroll("shop", "alice")))
    clock.now = T0 + 5
    await totp.verify("shop", "alice", gen.at(T0 + 30))
    with pytest.raises(TotpReplayed):
        await totp.verify("shop", "alice", gen.at(T0 - 30))


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"])
async def test_totp_malformed_is_wrong(bad: str) -> None:
    totp, _, _ = make_totp()
    await totp.enroll("shop", "alice")
    with pytest.raises(TotpWrongCode):
        await totp.verify("shop", "alice", bad)


async def test_totp_not_enrolled_and_tenant_scoped() -> None:
    totp, _, clock = make_totp()
    secret = secret_of(await totp.enroll("shop", "alice"))
    code = pyotp.TOTP(secret).at(clock.now)
    with pytest.raises(TotpNotEnrolled) as missing:
        await totp.verify("bank", "alice", code)
    assert missing.value.code == "totp_not_enrolled"
    with pytest.raises(TotpNotEnrolled):
        await totp.verify("shop", "bob", code)


async def test_totp_reenroll_replaces_secret() -> None:
    totp, _, clock = make_totp()
    first = pyotp.TOTP(secret_of(await totp.enroll("shop", "alice")))
    second = pyotp.TOTP(secret_of(await totp.enroll("shop", "alice")))
    assert first.secret != second.secret
    if first.at(clock.now) != second.at(clock.now):  # 1e-6 chance they collide
        with pytest.raises(TotpWrongCode):
            await totp.verify("shop", "alice", first.at(clock.now))
    await totp.verify("shop", "alice", second.at(clock.now))


async def test_totp_enroll_rejects_colon_and_uri_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    totp, _, clock = make_totp()
    with pytest.raises(ValueError, match="no ':'"):
        await totp.enroll("shop", "a:b")
    with pytest.raises(ValueError, match="no ':'"):
        TotpService(MemoryTotpStore(), "Bad:Issuer", KEY, clock=clock)
    secret = secret_of(await totp.enroll("shop", "alice"))
    await totp.verify("shop", "alice", pyotp.TOTP(secret).at(clock.now))
    assert secret not in caplog.text


class SlowTotpStore(MemoryTotpStore):
    """Yields between a read and the following write, as a networked store would."""

    async def get_totp(self, tenant: str, user: str) -> TotpRecord | None:
        record = await super().get_totp(tenant, user)
        await trio.sleep(0)
        return record


async def test_totp_concurrent_same_code_accepted_once() -> None:
    clock = FakeClock()
    totp = TotpService(SlowTotpStore(), "Ulak", KEY, clock=clock)
    secret = secret_of(await totp.enroll("shop", "alice"))
    code = pyotp.TOTP(secret).at(clock.now)
    outcomes: list[str] = []

    async def attempt() -> None:
        try:
            await totp.verify("shop", "alice", code)
            outcomes.append("ok")
        except TotpReplayed as exc:
            outcomes.append(exc.code)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(attempt)
    assert Counter(outcomes) == {"ok": 1, "totp_replayed": 4}
