from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.constants import MessageState
from protocols.receipts import (
    ReceiptParseError,
    format_receipt_text,
    message_id_keys,
    parse_receipt,
)

STANDARD = (
    b"id:0123456789 sub:001 dlvrd:001 submit date:2611251030 done date:2611251031 "
    b"stat:DELIVRD err:000 text:Dogrulama kodunuz"
)


def test_standard_appendix_b_receipt() -> None:
    r = parse_receipt(STANDARD)
    assert r.message_id == "0123456789"
    assert r.state is MessageState.DELIVERED and r.is_final
    assert (r.sub, r.dlvrd, r.err, r.stat) == ("001", "001", "000", "DELIVRD")
    assert r.submitted == dt.datetime(2026, 11, 25, 10, 30)
    assert r.done == dt.datetime(2026, 11, 25, 10, 31)
    assert r.text == "Dogrulama kodunuz"


@pytest.mark.parametrize(
    ("raw", "message_id", "state"),
    [
        # upper-case keys
        (
            b"ID:ABC123 SUB:001 DLVRD:000 SUBMIT DATE:2611251030 DONE DATE:2611251031 STAT:UNDELIV "
            b"ERR:034 TEXT:hi",
            "ABC123",
            MessageState.UNDELIVERABLE,
        ),
        # no text: field at all
        (
            b"id:77 sub:001 dlvrd:001 submit date:2611251030 done date:2611251031 "
            b"stat:DELIVRD err:0",
            "77",
            MessageState.DELIVERED,
        ),
        # 12-digit dates, with seconds
        (
            b"id:5 submit date:261125103059 done date:261125103101 stat:EXPIRED",
            "5",
            MessageState.EXPIRED,
        ),
        # reordered and extra fields
        (b"stat:REJECTD foo:bar id:x-1 err:011 mccmnc:28601", "x-1", MessageState.REJECTED),
        # lower-case stat, spelled-out words
        (b"id:9 stat:delivered", "9", MessageState.DELIVERED),
        (b"id:9 stat:UNDELIVERABLE", "9", MessageState.UNDELIVERABLE),
        # intermediate state
        (b"id:9 stat:ENROUTE", "9", MessageState.ENROUTE),
        # unknown stat word
        (b"id:9 stat:WEIRD", "9", MessageState.UNKNOWN),
        # multiple spaces and a text with colons and spaces
        (b"id:9   stat:ACCEPTD   text:a: b  c:d", "9", MessageState.ACCEPTED),
        # missing stat entirely
        (b"id:42 sub:001", "42", MessageState.UNKNOWN),
        # DELETED
        (b"id:42 stat:DELETED", "42", MessageState.DELETED),
    ],
)
def test_real_world_variants(raw: bytes, message_id: str, state: MessageState) -> None:
    r = parse_receipt(raw)
    assert r.message_id == message_id
    assert r.state is state
    assert r.is_final == (state is not MessageState.ENROUTE)


def test_text_keeps_the_rest_of_the_line() -> None:
    r = parse_receipt(b"id:9 stat:DELIVRD text:a: b  c:d stat:UNDELIV")
    assert r.text == "a: b  c:d stat:UNDELIV"
    assert r.state is MessageState.DELIVERED  # a stat inside text: does not count


def test_twelve_digit_and_bad_dates() -> None:
    r = parse_receipt(b"id:1 submit date:261125103059 done date:2613999999 stat:DELIVRD")
    assert r.submitted == dt.datetime(2026, 11, 25, 10, 30, 59)
    assert r.done is None  # month 13: ignored, not fatal


def test_tlv_only_receipt() -> None:
    r = parse_receipt(
        b"",
        receipted_message_id="1A2B",
        message_state=MessageState.UNDELIVERABLE,
        network_error_code=bytes([0x03, 0x00, 0x22]),
    )
    assert r.message_id == "1A2B"
    assert r.state is MessageState.UNDELIVERABLE
    assert r.network_error == (3, 0x22)


def test_tlvs_win_over_text() -> None:
    r = parse_receipt(STANDARD, receipted_message_id="ffee", message_state=MessageState.EXPIRED)
    assert r.message_id == "ffee"
    assert r.state is MessageState.EXPIRED
    assert r.stat == "DELIVRD"  # the text's claim is still visible


def test_not_a_receipt() -> None:
    with pytest.raises(ReceiptParseError):
        parse_receipt(b"DURDUR")
    with pytest.raises(ReceiptParseError):
        parse_receipt(b"")


def test_ids_match_across_hex_decimal_zeros_and_case() -> None:
    def same(a: str, b: str) -> bool:
        return bool(set(message_id_keys(a)) & set(message_id_keys(b)))

    assert same("1A2B", "6699")  # hex in the resp, decimal in the receipt
    assert same("6699", "1a2b")
    assert same("00001a2b", "1A2B")
    assert same("0000012345", "12345")
    assert same("msg-ABC", "MSG-abc")
    assert not same("1A2B", "1A2C")
    assert not same("msg-1", "msg-2")
    assert len(message_id_keys("123456")) == 2
    assert message_id_keys("") == ()


@given(st.integers(0, 2**64))
def test_hex_and_decimal_forms_of_one_number_always_match(n: int) -> None:
    decimal = str(n)
    for hex_form in (f"{n:x}", f"{n:X}", f"{n:016x}"):
        assert set(message_id_keys(hex_form)) & set(message_id_keys(decimal))
    assert len(message_id_keys(decimal)) <= 2


@given(st.text("0123456789abcdefABCDEF-_xyz", min_size=1, max_size=20))
def test_keys_ignore_case_and_leading_zeros(raw: str) -> None:
    assert message_id_keys(raw.upper()) == message_id_keys(raw.lower())
    assert message_id_keys("000" + raw) == message_id_keys(raw)


@given(
    st.sampled_from(list(MessageState)),
    st.text("0123456789abcdef", min_size=1, max_size=16),
    st.integers(0, 999),
)
def test_format_then_parse(state: MessageState, message_id: str, err: int) -> None:
    submitted = dt.datetime(2026, 11, 25, 10, 30)
    done = dt.datetime(2026, 11, 25, 10, 31)
    raw = format_receipt_text(
        message_id=message_id, state=state, submitted=submitted, done=done, err=err, text="hi"
    )
    r = parse_receipt(raw)
    assert r.message_id == message_id
    assert r.state is state
    assert (r.submitted, r.done, r.err, r.text) == (submitted, done, f"{err:03d}", "hi")
