"""Differential tests against smpplib 2.2.4, an independent SMPP 3.4 codec (STYLE §5).

For every PDU type smpplib implements, hypothesis builds PDUs from values both libraries can
represent, and checks three things: our octets decode in smpplib to the same fields, smpplib's
octets decode in ours to the same PDU, and both encoders produce the very same octets.

smpplib needs a "client" to hand out sequence numbers, and its constructor ignores some
keyword arguments (``sequence``, a bind's ``interface_version``), so fields are set on the
object after construction (STACK.md §7). It decodes C-octet strings to ``bytes``.

Where smpplib departs from SMPP 3.4 the values are left out, and
``test_the_smpplib_disagreements_are_the_known_ones`` pins the list, so a new smpplib that
fixes (or adds) one shows up here:

- submit_sm ``source_addr_subunit`` is 2 octets in smpplib, 1 in §5.3.2.1 (data_sm has 1).
- data_sm ``source_telematics_id`` is 2 octets in smpplib, 1 in §5.3.2.8.
- ``source_subaddress`` / ``dest_subaddress`` (§5.3.2.15-16) and ``callback_num_atag``
  (§5.3.2.38) are octet strings; smpplib writes them as C-octet strings (NUL added).
- ``its_session_info`` (§5.3.2.43) is a 2-octet octet string; smpplib reads an integer (the
  octets are the same, the Python value differs).
- ``alert_on_message_delivery`` (§5.3.2.41) is a flag: smpplib never encodes it.
- data_sm_resp ``delivery_failure_reason`` (§5.3.2.33, 1-octet integer) and
  ``network_error_code`` (§5.3.2.31, 3 octets) are C-octet strings in smpplib.

Other smpplib limits the strategies respect (not protocol disagreements):

- C-octet string TLVs go through ``str.encode()`` (UTF-8) after the length was counted in
  characters, so only ASCII is generated for them; empty strings and empty octet-string TLVs
  are silently dropped by its encoder, so they are generated non-empty.
- data_sm and alert_notification addresses are at most 20 characters in smpplib (64 in §4.7.1
  and §4.12.1); ``message_payload`` at most 260 octets.
- query_sm refuses an empty message_id; submit_sm refuses short_message together with
  message_payload (both §-legal only in the second case's negative form, see §5.3.2.32).
- smpplib has no outbind, submit_multi(_resp), cancel_sm(_resp) or replace_sm(_resp).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smpplib import consts as smpplib_consts
from smpplib import exceptions as smpplib_exceptions
from smpplib import smpp
from smpplib.ptypes import flag as smpplib_flag
from smpplib.ptypes import ostr as smpplib_ostr

from protocols import pdu as pdu_module
from protocols import tlv as tlv_module
from protocols._codec import CSTR, SM, TIME, TLVS, U8
from protocols.pdu import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Tlvs,
    Unbind,
    UnbindResp,
    decode,
    encode,
)
from tests.pdu_strategies import cstrings, field_strategy


class _SeqStub:
    """What smpplib wants of a client to build a PDU: ``.sequence`` and ``next_sequence()``."""

    sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


_STUB = _SeqStub()

SMPPLIB_NAMES: dict[type[Pdu], str] = {
    GenericNack: "generic_nack",
    BindReceiver: "bind_receiver",
    BindReceiverResp: "bind_receiver_resp",
    BindTransmitter: "bind_transmitter",
    BindTransmitterResp: "bind_transmitter_resp",
    BindTransceiver: "bind_transceiver",
    BindTransceiverResp: "bind_transceiver_resp",
    Unbind: "unbind",
    UnbindResp: "unbind_resp",
    SubmitSm: "submit_sm",
    SubmitSmResp: "submit_sm_resp",
    DeliverSm: "deliver_sm",
    DeliverSmResp: "deliver_sm_resp",
    DataSm: "data_sm",
    DataSmResp: "data_sm_resp",
    QuerySm: "query_sm",
    QuerySmResp: "query_sm_resp",
    EnquireLink: "enquire_link",
    EnquireLinkResp: "enquire_link_resp",
    AlertNotification: "alert_notification",
}
NOT_IN_SMPPLIB = {
    Outbind: "outbind",
    SubmitMulti: "submit_multi",
    SubmitMultiResp: "submit_multi_resp",
    CancelSm: "cancel_sm",
    CancelSmResp: "cancel_sm_resp",
    ReplaceSm: "replace_sm",
    ReplaceSmResp: "replace_sm_resp",
}

KNOWN_DISAGREEMENTS = {
    ("submit_sm", "source_addr_subunit"),
    ("submit_sm", "source_subaddress"),
    ("submit_sm", "dest_subaddress"),
    ("submit_sm", "its_session_info"),
    ("submit_sm", "alert_on_message_delivery"),
    ("deliver_sm", "source_subaddress"),
    ("deliver_sm", "dest_subaddress"),
    ("deliver_sm", "its_session_info"),
    ("data_sm", "source_telematics_id"),
    ("data_sm", "source_subaddress"),
    ("data_sm", "dest_subaddress"),
    ("data_sm", "callback_num_atag"),
    ("data_sm", "its_session_info"),
    ("data_sm", "alert_on_message_delivery"),
    ("data_sm_resp", "delivery_failure_reason"),
    ("data_sm_resp", "network_error_code"),
}


def _smpplib_class(cls: type[Pdu]) -> Any:
    return type(smpp.make_pdu(SMPPLIB_NAMES[cls], client=_STUB))


def _is_optional(lib_cls: Any, name: str) -> bool:
    mandatory = getattr(lib_cls, "mandatory_fields", ())
    return name in smpplib_consts.OPTIONAL_PARAMS and name not in mandatory


def _tlv_agreement(cls: type[Pdu]) -> tuple[list[str], set[tuple[str, str]]]:
    """smpplib's TLVs for ``cls`` in its order: those typed as we type them, and the others."""
    lib_cls = _smpplib_class(cls)
    agreed: list[str] = []
    disagree: set[tuple[str, str]] = set()
    for name in lib_cls.params_order:
        if not _is_optional(lib_cls, name):
            continue
        param = lib_cls.params[name]
        _tag, kind, _lo, hi = tlv_module._ENCODE_TABLE[name]
        if kind in (1, 2, 4):
            same = param.type is int and getattr(param, "size", None) == kind
        elif kind == tlv_module._CSTR:
            same = param.type is str and getattr(param, "max", 0) >= hi
        elif kind == tlv_module._OCTETS:
            same = param.type is smpplib_ostr
        else:
            same = param.type is smpplib_flag and False  # smpplib never encodes a flag
        if same:
            agreed.append(name)
        else:
            disagree.add((SMPPLIB_NAMES[cls], name))
    return agreed, disagree


def _mandatory_names(cls: type[Pdu]) -> list[str]:
    return [f.name for f in pdu_module._LAYOUTS[cls] if f.kind != TLVS]


def test_smpplib_covers_the_expected_commands() -> None:
    for cls in SMPPLIB_NAMES:
        assert _smpplib_class(cls)
    for name in NOT_IN_SMPPLIB.values():
        with pytest.raises(smpplib_exceptions.UnknownCommandError):
            smpp.make_pdu(name, client=_STUB)


def test_the_smpplib_disagreements_are_the_known_ones() -> None:
    found: set[tuple[str, str]] = set()
    for cls in SMPPLIB_NAMES:
        found |= _tlv_agreement(cls)[1]
    assert found == KNOWN_DISAGREEMENTS


def test_same_mandatory_fields_in_the_same_order() -> None:
    for cls in SMPPLIB_NAMES:
        lib_cls = _smpplib_class(cls)
        theirs = [
            n for n in lib_cls.params_order if not _is_optional(lib_cls, n) and n != "sm_length"
        ]
        assert theirs == _mandatory_names(cls), cls.__name__


def _field_value(cls: type[Pdu], name: str) -> Any:
    field = next(f for f in pdu_module._LAYOUTS[cls] if f.name == name)
    lib_param = _smpplib_class(cls).params[name]
    if field.kind == CSTR:
        # smpplib truncates silently at its own maximum, which may be below the spec's.
        size = min(field.size, lib_param.max)
        return cstrings(size - 1, min_size=1 if cls is QuerySm else 0)
    if field.kind in (U8, TIME, SM):
        return field_strategy(field)
    raise AssertionError(field.kind)


def _tlv_value(name: str) -> Any:
    _tag, kind, lo, hi = tlv_module._ENCODE_TABLE[name]
    if kind in (1, 2, 4):
        return st.integers(0, (1 << (8 * kind)) - 1)
    if kind == tlv_module._CSTR:
        return st.text(
            st.characters(min_codepoint=1, max_codepoint=0x7F), min_size=1, max_size=hi - 1
        )
    return st.binary(min_size=max(lo, 1), max_size=min(hi, 260))


@st.composite
def _values(draw: st.DrawFn, cls: type[Pdu]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mandatory field values, TLV values in smpplib's order) for one PDU."""
    fields = {name: draw(_field_value(cls, name)) for name in _mandatory_names(cls)}
    agreed = _tlv_agreement(cls)[0]
    chosen = draw(st.lists(st.sampled_from(agreed), unique=True, max_size=4)) if agreed else []
    tlvs = {name: draw(_tlv_value(name)) for name in agreed if name in chosen}
    if "message_payload" in tlvs and "short_message" in fields:
        fields["short_message"] = b""  # smpplib refuses both at once
    return fields, tlvs


def _ours(
    cls: type[Pdu], seq: int, status: int, fields: dict[str, Any], tlvs: dict[str, Any]
) -> Pdu:
    extra: dict[str, Any] = {"tlvs": Tlvs(**tlvs)} if "tlvs" in _field_names(cls) else {}
    return cls(sequence_number=seq, command_status=status, **fields, **extra)


def _field_names(cls: type[Pdu]) -> set[str]:
    return {f.name for f in pdu_module._LAYOUTS[cls]}


def _smpplib_pdu(
    cls: type[Pdu], seq: int, status: int, fields: dict[str, Any], tlvs: dict[str, Any]
) -> Any:
    lib = smpp.make_pdu(SMPPLIB_NAMES[cls], client=_STUB)
    for name, value in {**fields, **tlvs}.items():
        setattr(lib, name, value)
    lib.sequence = seq  # after construction: the constructor ignores it (STACK.md §7)
    lib.status = status
    return lib


def _as_smpplib_value(value: Any) -> Any:
    return value.encode("latin-1") if isinstance(value, str) else value


_STATUS = st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF))
_SEQ = st.integers(0, 0xFFFFFFFF)


@pytest.mark.parametrize("cls", list(SMPPLIB_NAMES), ids=lambda c: c.__name__)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_both_directions_and_identical_bytes(cls: type[Pdu], data: st.DataObject) -> None:
    seq, status = data.draw(_SEQ), data.draw(_STATUS)
    fields, tlvs = data.draw(_values(cls))
    ours = _ours(cls, seq, status, fields, tlvs)
    our_bytes = encode(ours)

    # Ours -> smpplib: every field reads back the same.
    parsed = smpp.parse_pdu(our_bytes, client=_STUB)
    assert parsed.command == SMPPLIB_NAMES[cls]
    assert (parsed.sequence, parsed.status) == (seq, status)
    for name, value in fields.items():
        got = getattr(parsed, name)
        if got is None and name == "short_message":
            got = b""  # smpplib stops parsing at the end of the body: sm_length 0, no octets
        assert got == _as_smpplib_value(value), name
    for name in _tlv_agreement(cls)[0]:
        expected = _as_smpplib_value(tlvs[name]) if name in tlvs else None
        assert getattr(parsed, name) == expected, name

    # smpplib -> ours, and the same octets.
    lib_bytes = _smpplib_pdu(cls, seq, status, fields, tlvs).generate()
    assert decode(lib_bytes) == ours
    assert lib_bytes == our_bytes


def test_a_receipt_both_ways() -> None:
    """The benchmark's deliver_sm, by hand: the case the gateway lives on."""
    text = (
        b"id:0A1B2C3D4E sub:001 dlvrd:001 submit date:2511250800 done date:2511250801 "
        b"stat:DELIVRD err:000 text:x"
    )
    fields = {"source_addr": "905321234567", "destination_addr": "ULAK", "esm_class": 4}
    lib = _smpplib_pdu(
        DeliverSm,
        9,
        0,
        {**fields, "short_message": text},
        {"network_error_code": b"\x03\x00\x00", "message_state": 2, "receipted_message_id": "0A1B"},
    )
    pdu = decode(lib.generate())
    assert isinstance(pdu, DeliverSm)
    assert pdu.short_message == text
    assert pdu.tlvs == Tlvs(
        receipted_message_id="0A1B", message_state=2, network_error_code=b"\x03\x00\x00"
    )
