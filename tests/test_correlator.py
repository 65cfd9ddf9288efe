"""Receipt matching in memory: id forms, early receipts, expiry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.correlator import ReceiptCorrelator
from protocols.constants import MessageState
from protocols.receipts import Receipt


def _receipt(message_id: str, state: MessageState = MessageState.DELIVERED) -> Receipt:
    return Receipt(message_id=message_id, state=state)


def test_a_receipt_finds_its_part_by_id() -> None:
    c = ReceiptCorrelator()
    assert c.submitted("4F2A10", ("m1", 0), 0.0) is None
    assert c.match(_receipt("4f2a10")) == ("m1", 0)
    assert c.match(_receipt("004F2A10")) == ("m1", 0)  # leading zeros and case
    assert c.match(_receipt("4F2A11")) is None


@given(st.integers(min_value=1, max_value=2**48))
def test_hex_submit_id_and_decimal_receipt_id_meet(value: int) -> None:
    # The resp says hex, the receipt says decimal (or the other way): Jasmin issue class.
    c = ReceiptCorrelator()
    c.submitted(f"{value:X}", ("m", 1), 0.0)
    assert c.match(_receipt(str(value))) == ("m", 1)
    d = ReceiptCorrelator()
    d.submitted(str(value).zfill(12), ("m", 2), 0.0)
    assert d.match(_receipt(f"{value:x}")) == ("m", 2)


def test_an_early_receipt_is_held_then_handed_over_at_submission() -> None:
    c = ReceiptCorrelator(hold_s=60)
    early = _receipt("123456", MessageState.UNDELIVERABLE)
    assert c.match(early) is None
    c.hold(early, 10.0)
    assert c.held == 1
    assert c.submitted("1E240", ("m", 0), 10.5) is early  # 0x1E240 == 123456
    assert c.held == 0
    # The part is still remembered, for a later (final) receipt after an intermediate one.
    assert c.match(_receipt("123456")) == ("m", 0)


def test_a_part_not_remembered_still_takes_its_early_receipt() -> None:
    c = ReceiptCorrelator()
    assert c.submitted("AB01", ("m", 0), 0.0, remember=False) is None
    assert len(c) == 0 and c.match(_receipt("ab01")) is None
    early = _receipt("AB02", MessageState.UNDELIVERABLE)
    c.hold(early, 1.0)
    assert c.submitted("ab02", ("m", 1), 2.0, remember=False) is early
    assert c.held == 0 and len(c) == 0


def test_held_receipts_expire_and_are_reported_once() -> None:
    c = ReceiptCorrelator(hold_s=60)
    c.hold(_receipt("777"), 0.0)  # a decimal-looking id: held under two keys
    c.hold(_receipt("abc"), 30.0)
    assert c.expire(59.0) == []
    dropped = c.expire(61.0)
    assert [r.message_id for r in dropped] == ["777"]
    assert c.held == 1
    assert c.submitted("777", ("m", 0), 62.0) is None  # gone: not matched any more


def test_old_submissions_are_forgotten_and_forget_drops_a_match() -> None:
    c = ReceiptCorrelator(remember_s=100)
    c.submitted("a1", ("m1", 0), 0.0)
    c.submitted("a2", ("m2", 0), 50.0)
    c.expire(120.0)
    assert c.match(_receipt("a1")) is None
    assert c.match(_receipt("a2")) == ("m2", 0)
    c.forget(_receipt("A2"))
    assert c.match(_receipt("a2")) is None
    assert len(c) == 0
