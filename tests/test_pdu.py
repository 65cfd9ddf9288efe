"""The PDU codec: round trips, hand-checked bytes, and every validation path (SMPP 3.4 §4, §5)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import pickle
import struct
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocols import pdu as pdu_module
from protocols.constants import CommandId, CommandStatus, TlvTag
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.pdu import (
    NO_TLVS,
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
    DistributionList,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    SmeAddress,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Tlvs,
    Unbind,
    UnbindResp,
    UnsuccessSme,
    decode,
    encode,
    is_response,
    response_for,
)
from tests.pdu_strategies import ALL_CLASSES, pdu_of, pdus

S = CommandStatus


def _header(length: int, command_id: int, status: int, seq: int) -> bytes:
    return struct.pack(">IIII", length, command_id, status, seq)


def _remote_error(data: bytes, **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data, **kwargs)
    return info.value


# --- Round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_every_class(cls: type[Pdu], data: st.DataObject) -> None:
    pdu = data.draw(pdu_of(cls))
    wire = encode(pdu)
    back = decode(wire)
    assert back == pdu
    assert type(back) is cls
    assert encode(back) == wire  # a decoded PDU re-encodes to the same octets
    assert struct.unpack(">I", wire[:4])[0] == len(wire)


@settings(max_examples=200, deadline=None)
@given(pdus())
def test_decoded_pdu_is_an_ordinary_instance(pdu: Pdu) -> None:
    back = decode(encode(pdu))
    assert hash(back) == hash(pdu)
    assert dataclasses.replace(back) == pdu  # runs __init__: the decoded values are valid
    assert repr(back) == repr(pdu)
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.sequence_number = 1  # type: ignore[misc]


@settings(max_examples=100, deadline=None)
@given(pdus(), st.integers(0, 0xFFFFFFFF))
def test_sequence_number_override(pdu: Pdu, seq: int) -> None:
    assert decode(encode(pdu, seq)) == dataclasses.replace(pdu, sequence_number=seq)


def test_every_smpp34_command_has_a_class() -> None:
    assert {cls.command_id for cls in ALL_CLASSES} == set(CommandId)


def test_copy_and_pickle_keep_value() -> None:
    pdu = SubmitSm(
        sequence_number=3,
        destination_addr="905321234567",
        short_message=b"hi",
        tlvs=Tlvs(user_message_reference=7, unknown=((0x1400, b"x"),)),
    )
    assert copy.copy(pdu) == pdu
    assert copy.deepcopy(pdu) == pdu
    again = pickle.loads(pickle.dumps(pdu))
    assert again == pdu
    assert encode(again) == encode(pdu)


def test_subclass_is_encoded_as_its_base_and_keeps_its_class() -> None:
    class Tagged(SubmitSm):
        __slots__ = ()

    pdu = Tagged(destination_addr="1", short_message=b"x")
    assert type(pdu) is Tagged
    assert pdu.destination_addr == "1"
    assert decode(encode(pdu)) == SubmitSm(destination_addr="1", short_message=b"x")


# --- Hand-checked bytes (SMPP 3.4 §3.2 header, §4 bodies, §5.3 TLVs) ---------------------------


def test_golden_enquire_link() -> None:
    # §4.11.1: header only. command_length 16, command_id 0x15, status 0, sequence_number 1.
    wire = bytes.fromhex("00000010 00000015 00000000 00000001")
    assert encode(EnquireLink(sequence_number=1)) == wire
    assert decode(wire) == EnquireLink(sequence_number=1)


def test_golden_bind_transceiver() -> None:
    # §4.1.5: system_id "smppclient1" + NUL (12), password "password" + NUL (9),
    # system_type "" (just the NUL, 1), interface_version 0x34, addr_ton 0, addr_npi 0 (3),
    # address_range "" (1): body 26, command_length 16 + 26 = 42 = 0x2A; command_id 0x09.
    wire = bytes.fromhex(
        "0000002a 00000009 00000000 00000001"
        "736d7070636c69656e743100"  # "smppclient1\0"
        "70617373776f726400"  # "password\0"
        "00"  # system_type
        "34 00 00"  # interface_version, addr_ton, addr_npi
        "00"  # address_range
    )
    pdu = BindTransceiver(sequence_number=1, system_id="smppclient1", password="password")
    assert encode(pdu) == wire
    assert decode(wire) == pdu


def test_golden_submit_sm_with_tlv() -> None:
    # §4.4.1, in order: service_type "" (00); source_addr_ton 5, npi 0; source_addr "ACME\0";
    # dest_addr_ton 1, npi 1; destination_addr "447700900123\0"; esm_class, protocol_id,
    # priority_flag 0 0 0; schedule_delivery_time "" (00); validity_period "" (00);
    # registered_delivery 1; replace_if_present_flag 0; data_coding 0; sm_default_msg_id 0;
    # sm_length 2; short_message "Hi". Then TLV user_message_reference (§5.3.2.17):
    # tag 0x0204, length 2, value 42. Body: 1+2+5+2+13+3+1+1+4+1+2+6 = 41; 16 + 41 = 57 = 0x39.
    wire = bytes.fromhex(
        "00000039 00000004 00000000 00000007"
        "00"
        "05 00" + "41434d4500" + "01 01" + "34343737303039303031323300"
        "000000" + "00" + "00" + "01000000" + "02" + "4869" + "0204 0002 002a"
    )
    pdu = SubmitSm(
        sequence_number=7,
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="447700900123",
        registered_delivery=1,
        short_message=b"Hi",
        tlvs=Tlvs(user_message_reference=42),
    )
    assert encode(pdu) == wire
    assert decode(wire) == pdu


def test_golden_deliver_sm_receipt() -> None:
    # §4.6.1 deliver_sm with esm_class 0x04 (§5.2.12: SMSC delivery receipt). Body:
    # service_type 00; source 01 01 "447700900123\0" (2+13); dest 05 00 "ACME\0" (2+5);
    # esm_class 04, protocol_id 00, priority_flag 00; two empty times 00 00;
    # registered_delivery 00, replace_if_present 00, data_coding 00, sm_default_msg_id 00;
    # sm_length 0x11 = 17 and the text "id:7 stat:DELIVRD". TLVs: receipted_message_id
    # (0x001E) "7\0", length 2; message_state (0x0427), length 1, value 2 = DELIVERED
    # (§5.2.28). Body: 1+15+7+3+2+4+1+17+6+5 = 61; 16 + 61 = 77 = 0x4D.
    text = b"id:7 stat:DELIVRD"
    wire = (
        bytes.fromhex(
            "0000004d 00000005 00000000 0000000b"
            "00"
            "01 01" + "34343737303039303031323300"
            "05 00" + "41434d4500"
            "04 00 00" + "00 00" + "00 00 00 00" + "11"
        )
        + text
        + bytes.fromhex("001e 0002 3700" + "0427 0001 02")
    )
    pdu = DeliverSm(
        sequence_number=11,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="447700900123",
        dest_addr_ton=5,
        destination_addr="ACME",
        esm_class=0x04,
        short_message=text,
        tlvs=Tlvs(receipted_message_id="7", message_state=2),
    )
    assert encode(pdu) == wire
    assert decode(wire) == pdu


def test_golden_generic_nack() -> None:
    # §4.3.1: header only; sequence_number 0 because the offending header was unreadable.
    wire = bytes.fromhex("00000010 80000000 00000003 00000000")
    nack = GenericNack(command_status=S.ESME_RINVCMDID)
    assert encode(nack) == wire
    assert decode(wire) == nack


def test_golden_submit_sm_resp_error_with_empty_body() -> None:
    # An SMSC answering ESME_RTHROTTLED (0x58) may leave out the body, message_id included
    # (command_length 16). Decoded leniently to the default message_id "".
    wire = bytes.fromhex("00000010 80000004 00000058 0000002a")
    pdu = decode(wire)
    assert pdu == SubmitSmResp(sequence_number=42, command_status=S.ESME_RTHROTTLED)
    # We always send the body: message_id "" is one NUL octet (command_length 17).
    assert encode(pdu) == bytes.fromhex("00000011 80000004 00000058 0000002a 00")


@pytest.mark.parametrize(
    "cls",
    [
        BindReceiverResp,
        BindTransmitterResp,
        BindTransceiverResp,
        SubmitMultiResp,
        DataSmResp,
        QuerySmResp,
    ],
)
def test_failed_responses_may_have_an_empty_body(cls: type[Pdu]) -> None:
    wire = _header(16, cls.command_id, S.ESME_RSYSERR, 9)
    assert decode(wire) == cls(sequence_number=9, command_status=S.ESME_RSYSERR)
    # With status 0 the body is mandatory: a cut-short PDU.
    error = _remote_error(_header(16, cls.command_id, 0, 9))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 9)


def test_deliver_sm_resp_may_always_have_an_empty_body() -> None:
    # Its message_id is unused (§4.6.2) and many ESMEs send no body at all.
    assert decode(_header(16, CommandId.DELIVER_SM_RESP, 0, 4)) == DeliverSmResp(sequence_number=4)


def test_submit_multi_bytes() -> None:
    # §4.5.1: number_of_dests 2; dest_flag 1 (SME: ton 1, npi 1, "12\0"); dest_flag 2 ("L\0").
    pdu = SubmitMulti(
        sequence_number=2,
        dest_address=(
            SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr="12"),
            DistributionList(dl_name="L"),
        ),
        short_message=b"x",
    )
    body = bytes.fromhex("00 00 00 00" + "02" + "01 01 01 313200" + "02 4c00")
    body += bytes.fromhex("00 00 00 00 00 00 00 00 00 01") + b"x"
    wire = _header(16 + len(body), CommandId.SUBMIT_MULTI, 0, 2) + body
    assert encode(pdu) == wire
    assert decode(wire) == pdu


def test_submit_multi_resp_bytes() -> None:
    # §4.5.2: message_id "m\0", no_unsuccess 1, then ton 1, npi 1, "12\0", error 0x0B.
    pdu = SubmitMultiResp(
        sequence_number=2,
        message_id="m",
        unsuccess_sme=(
            UnsuccessSme(
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr="12",
                error_status_code=S.ESME_RINVDSTADR,
            ),
        ),
    )
    body = bytes.fromhex("6d00 01 01 01 313200 0000000b")
    assert encode(pdu) == _header(16 + len(body), CommandId.SUBMIT_MULTI_RESP, 0, 2) + body
    assert decode(encode(pdu)) == pdu


def test_every_standard_tlv_tag_and_size() -> None:
    # §5.3.2: integers are their size, alert_on_message_delivery has no value. TLVs are
    # encoded in the order given.
    tlvs = Tlvs(
        dest_telematics_id=0x0102,
        source_telematics_id=1,
        qos_time_to_live=0x01020304,
        network_error_code=b"\x03\x00\x01",
        alert_on_message_delivery=True,
        its_session_info=b"\x00\x01",
    )
    wire = encode(DataSm(tlvs=tlvs))
    assert wire.endswith(
        bytes.fromhex(
            "0008 0002 01020010 0001 010017 0004 010203040423 0003 030001130c 00001383 0002 0001"
        )
    )
    assert decode(wire) == DataSm(tlvs=tlvs)
    assert {tag.name.lower() for tag in TlvTag} == {
        f.name for f in dataclasses.fields(Tlvs) if f.name != "unknown"
    }


def test_unknown_tlvs_are_kept_and_reencoded_unchanged() -> None:
    # A vendor TLV between two standard ones: decoded into ``unknown`` and, when relayed, the
    # PDU re-encodes to exactly the octets received (order included).
    tlv_block = bytes.fromhex("0427 0001 02" + "1400 0003 616263" + "001e 0002 3700")
    body = bytes.fromhex("00 0000 00 0000 00 000000 00 00 00000000 00") + tlv_block
    wire = _header(16 + len(body), CommandId.DELIVER_SM, 0, 5) + body
    pdu = decode(wire)
    assert isinstance(pdu, DeliverSm)
    assert pdu.tlvs.unknown == ((0x1400, b"abc"),)
    assert pdu.tlvs.message_state == 2
    assert pdu.tlvs.receipted_message_id == "7"
    assert encode(pdu) == wire


def test_receipted_message_id_without_nul_is_accepted() -> None:
    # Some SMSCs leave the NUL off (field reports); the text is still read.
    tlv_block = bytes.fromhex("001e 0003 414243")
    body = bytes.fromhex("00 0000 00 0000 00 000000 00 00 00000000 00") + tlv_block
    pdu = decode(_header(16 + len(body), CommandId.DELIVER_SM, 0, 5) + body)
    assert isinstance(pdu, DeliverSm)
    assert pdu.tlvs.receipted_message_id == "ABC"


# --- Validation of what the peer sent ----------------------------------------------------------

_EMPTY_SUBMIT_BODY = bytes.fromhex("00 0000 00 0000 00 000000 00 00 00000000 00")


def _submit(body: bytes, seq: int = 77) -> bytes:
    return _header(16 + len(body), CommandId.SUBMIT_SM, 0, seq) + body


def test_command_length_below_header() -> None:
    error = _remote_error(_header(8, CommandId.ENQUIRE_LINK, 0, 5))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 0)
    error = _remote_error(b"\x00\x00\x00\x0f")
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 0)


def test_command_length_above_maximum() -> None:
    wire = _header(200, CommandId.SUBMIT_SM, 0, 5) + bytes(184)
    error = _remote_error(wire, max_command_length=100)
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 0)


def test_command_length_not_the_data_length() -> None:
    error = _remote_error(_header(20, CommandId.ENQUIRE_LINK, 0, 5) + b"\0\0")
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 5)


def test_unknown_command_id() -> None:
    error = _remote_error(_header(16, 0x00000099, 0, 6))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDID, 6)
    assert error.command_id == 0x99


def test_trailing_octets_after_a_header_only_pdu() -> None:
    error = _remote_error(_header(17, CommandId.ENQUIRE_LINK, 0, 8) + b"\0")
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 8)
    assert error.command_id == CommandId.ENQUIRE_LINK


def test_trailing_octets_after_the_last_mandatory_field() -> None:
    # query_sm carries no TLVs (§4.8.1): extra octets are a length error.
    body = b"1\0" + b"\0\0" + b"\0" + b"\x01"
    error = _remote_error(_header(16 + len(body), CommandId.QUERY_SM, 0, 8) + body)
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 8)


@pytest.mark.parametrize(
    ("cls", "field_index", "max_octets", "status"),
    [
        (BindTransmitter, 0, 16, S.ESME_RINVSYSID),
        (BindTransmitter, 1, 9, S.ESME_RINVPASWD),
        (BindTransmitter, 2, 13, S.ESME_RINVSYSTYP),
        (Outbind, 0, 16, S.ESME_RINVSYSID),
        (SubmitSmResp, 0, 65, S.ESME_RINVMSGID),
        (QuerySm, 0, 65, S.ESME_RINVMSGID),
    ],
)
def test_c_octet_string_without_nul_within_its_maximum(
    cls: type[Pdu], field_index: int, max_octets: int, status: int
) -> None:
    # The NUL must come within the field's maximum (§3.1); when the body is long enough
    # to hold it, the field itself is bad.
    strings = ["" for _ in range(field_index)]
    body = b"".join(s.encode() + b"\0" for s in strings) + b"A" * max_octets + bytes(20)
    wire = _header(16 + len(body), cls.command_id, 0, 31) + body
    error = _remote_error(wire)
    assert (error.command_status, error.sequence_number) == (status, 31)


def test_c_octet_string_cut_short_by_the_body_end() -> None:
    # system_id "ABC" with no NUL and nothing after: the PDU is truncated, not the field bad.
    wire = _header(19, CommandId.BIND_TRANSMITTER, 0, 32) + b"ABC"
    error = _remote_error(wire)
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 32)


@pytest.mark.parametrize(
    ("offset", "status"),
    [
        (1, S.ESME_RINVSERTYP),  # service_type at most 5 characters
        (4, S.ESME_RINVSRCADR),  # source_addr at most 20
        (7, S.ESME_RINVDSTADR),  # destination_addr at most 20
    ],
)
def test_submit_sm_address_too_long(offset: int, status: int) -> None:
    # Replace the empty string at ``offset`` of the empty body with 21 'A's (no NUL in range).
    body = _EMPTY_SUBMIT_BODY[: offset - 1] + b"A" * 21 + _EMPTY_SUBMIT_BODY[offset - 1 :]
    error = _remote_error(_submit(body))
    assert (error.command_status, error.sequence_number) == (status, 77)


def test_time_field_of_wrong_length() -> None:
    body = bytearray(_EMPTY_SUBMIT_BODY)
    body[10:11] = b"2511250800\0"  # 10 characters: neither NULL nor 16 (§7.1)
    error = _remote_error(_submit(bytes(body)))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVSCHED, 77)
    body = bytearray(_EMPTY_SUBMIT_BODY)
    body[11:12] = b"000001000000000R\0"  # relative validity, 16 characters: fine
    assert decode(_submit(bytes(body))) == SubmitSm(
        sequence_number=77, validity_period="000001000000000R"
    )
    body[11:12] = b"0000010000000000R\0"  # 17 characters: too long
    error = _remote_error(_submit(bytes(body)))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVEXPIRY, 77)


def test_sm_length_runs_past_the_body() -> None:
    body = _EMPTY_SUBMIT_BODY[:-1] + b"\x0a" + b"short"  # says 10, has 5
    error = _remote_error(_submit(body))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVMSGLEN, 77)


def test_sm_length_above_254() -> None:
    body = _EMPTY_SUBMIT_BODY[:-1] + b"\xff" + bytes(255)
    error = _remote_error(_submit(body))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVMSGLEN, 77)


def test_priority_and_replace_flag_ranges() -> None:
    body = bytearray(_EMPTY_SUBMIT_BODY)
    body[9] = 4  # priority_flag 0..3 (§5.2.14)
    error = _remote_error(_submit(bytes(body)))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVPRTFLG, 77)
    body = bytearray(_EMPTY_SUBMIT_BODY)
    body[13] = 2  # replace_if_present_flag 0..1 (§5.2.18)
    error = _remote_error(_submit(bytes(body)))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVREPFLAG, 77)
    # deliver_sm: the ESME ignores both (§4.6.1), so a receipt is never rejected for them.
    body = bytearray(_EMPTY_SUBMIT_BODY)
    body[9] = 4
    body[13] = 2
    wire = _header(16 + len(body), CommandId.DELIVER_SM, 0, 3) + bytes(body)
    assert decode(wire) == DeliverSm(sequence_number=3, priority_flag=4, replace_if_present_flag=2)


def test_truncated_body() -> None:
    body = _EMPTY_SUBMIT_BODY[:9]  # cut inside esm_class .. priority_flag
    error = _remote_error(_submit(body))
    assert (error.command_status, error.sequence_number) == (S.ESME_RINVCMDLEN, 77)


@pytest.mark.parametrize(
    ("tlv", "status"),
    [
        ("0427 0002 0002", S.ESME_RINVPARLEN),  # message_state is 1 octet
        ("0204 0001 01", S.ESME_RINVPARLEN),  # user_message_reference is 2 octets
        ("0423 0002 0000", S.ESME_RINVPARLEN),  # network_error_code is 3 octets
        ("130c 0001 01", S.ESME_RINVPARLEN),  # alert_on_message_delivery has no value
        ("0381 0002 0000", S.ESME_RINVPARLEN),  # callback_num is 4..19 octets
        ("0204", S.ESME_RINVOPTPARSTREAM),  # TLV header cut short
        ("0204 0002 00", S.ESME_RINVOPTPARSTREAM),  # value cut short
        ("1400 0005 00", S.ESME_RINVOPTPARSTREAM),  # unknown tag, value cut short
        ("0424 0010 00", S.ESME_RINVOPTPARSTREAM),  # message_payload cut short
        ("0427 0001 02 0427 0001 03", S.ESME_RINVOPTPARSTREAM),  # given twice
        ("001e 0004 41004200", S.ESME_RINVOPTPARAMVAL),  # NUL inside a C-octet string
        ("001e 0041" + "41" * 65, S.ESME_RINVPARLEN),  # 65 octets and no NUL
    ],
)
def test_bad_tlvs(tlv: str, status: int) -> None:
    error = _remote_error(_submit(_EMPTY_SUBMIT_BODY + bytes.fromhex(tlv), seq=99))
    assert (error.command_status, error.sequence_number) == (status, 99)
    assert error.command_id == CommandId.SUBMIT_SM


def test_submit_multi_list_errors() -> None:
    head = b"\0" + b"\0\0" + b"\0"  # service_type, source ton/npi, source_addr
    tail = bytes(10)  # esm_class .. sm_length, all empty
    cases = [
        (b"\xff", S.ESME_RINVNUMDESTS),  # number_of_dests 255 > 254
        (b"\x01\x03", S.ESME_RINVDESTFLAG),  # dest_flag 3
        (b"\x01\x02" + b"A" * 21, S.ESME_RINVDLNAME),  # dl_name too long
        (b"\x01\x01\x00\x00" + b"A" * 21, S.ESME_RINVDSTADR),  # SME address too long
        (b"\x02\x01\x00\x00\x00", S.ESME_RINVCMDLEN),  # says 2, has 1, body cut
    ]
    for dests, status in cases:
        body = head + dests + (tail if status != S.ESME_RINVCMDLEN else b"")
        wire = _header(16 + len(body), CommandId.SUBMIT_MULTI, 0, 12) + body
        error = _remote_error(wire)
        assert (error.command_status, error.sequence_number) == (status, 12), dests


def test_request_with_a_nonzero_status_is_kept() -> None:
    # §3.2: requests should carry 0, but the value is kept rather than rejected.
    assert decode(_header(16, CommandId.ENQUIRE_LINK, 5, 1)) == EnquireLink(
        sequence_number=1, command_status=5
    )


# --- The fast decoders agree with the careful ones ---------------------------------------------


@settings(max_examples=400, deadline=None)
@given(pdus(), st.data())
def test_fast_and_careful_decoders_agree_on_mutations(pdu: Pdu, data: st.DataObject) -> None:
    """Flip, drop or insert octets of a valid body: both decoders give the same outcome."""
    wire = bytearray(encode(pdu))
    assume(len(wire) > 16)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(16, len(wire) - 1))
        action = data.draw(st.sampled_from(["set", "drop", "insert"]))
        if action == "set":
            wire[i] = data.draw(st.sampled_from([0, 1, 3, 4, 16, 0x41, 0xFE, 0xFF]))
        elif action == "drop" and len(wire) > 17:
            del wire[i]
        else:
            wire.insert(i, data.draw(st.sampled_from([0, 0x41, 0xFF])))
    struct.pack_into(">I", wire, 0, len(wire))
    raw = bytes(wire)
    fast = pdu_module._DECODERS[type(pdu).command_id]
    careful = fast.__globals__["careful"]
    seq, status = struct.unpack_from(">II", raw, 8)[::-1]
    outcomes = []
    for decoder in (fast, careful):
        try:
            outcomes.append(decoder(raw, seq, status))
        except RemoteProtocolError as exc:
            outcomes.append((exc.command_status, exc.sequence_number, exc.command_id))
    assert outcomes[0] == outcomes[1]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([int(c) for c in CommandId]))
def test_arbitrary_body_gives_a_pdu_or_a_remote_error(body: bytes, command_id: int) -> None:
    wire = _header(16 + len(body), command_id, 0, 1) + body
    try:
        pdu = decode(wire)
    except RemoteProtocolError as exc:
        assert exc.command_status != 0
        assert exc.sequence_number == 1
    else:
        # Whatever was accepted is a valid PDU: it re-encodes and reconstructs.
        assert decode(encode(pdu)) == pdu
        assert dataclasses.replace(pdu) == pdu


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_to_decode(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data)


# --- Construction-time validation --------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: EnquireLink(sequence_number=-1),
        lambda: EnquireLink(sequence_number=1 << 32),
        lambda: EnquireLink(command_status=-1),
        lambda: SubmitSm(esm_class=256),
        lambda: SubmitSm(esm_class=-1),
        lambda: SubmitSm(data_coding=1.5),  # type: ignore[arg-type]
        lambda: SubmitSm(priority_flag=4),
        lambda: SubmitSm(replace_if_present_flag=2),
        lambda: SubmitSm(source_addr="1" * 21),
        lambda: SubmitSm(service_type="123456"),
        lambda: SubmitSm(destination_addr="12\x003"),
        lambda: SubmitSm(destination_addr=b"123"),  # type: ignore[arg-type]
        lambda: SubmitSm(destination_addr=None),  # type: ignore[arg-type]
        lambda: SubmitSm(schedule_delivery_time="2511250800"),
        lambda: SubmitSm(short_message=bytes(255)),
        lambda: SubmitSm(short_message="text"),  # type: ignore[arg-type]
        lambda: SubmitSm(short_message=bytearray(b"x")),  # type: ignore[arg-type]
        lambda: SubmitSm(tlvs={"message_state": 1}),  # type: ignore[arg-type]
        lambda: BindTransmitter(system_id="x" * 16),
        lambda: BindTransmitter(password="x" * 9),
        lambda: DataSm(source_addr="1" * 65),
        lambda: QuerySmResp(final_date="1"),
        lambda: SubmitMulti(dest_address=[SmeAddress()]),  # type: ignore[arg-type]
        lambda: SubmitMulti(dest_address=("x",)),  # type: ignore[arg-type]
        lambda: SubmitMulti(dest_address=(DistributionList(),) * 255),
        lambda: SubmitMultiResp(unsuccess_sme=(SmeAddress(),)),  # type: ignore[arg-type]
        lambda: SmeAddress(destination_addr="1" * 21),
        lambda: DistributionList(dl_name="1" * 21),
        lambda: UnsuccessSme(error_status_code=-1),
        lambda: Tlvs(message_state=256),
        lambda: Tlvs(user_message_reference=-1),
        lambda: Tlvs(qos_time_to_live=1 << 32),
        lambda: Tlvs(sar_msg_ref_num="1"),  # type: ignore[arg-type]
        lambda: Tlvs(network_error_code=b"12"),
        lambda: Tlvs(callback_num=b"123"),
        lambda: Tlvs(receipted_message_id="x" * 65),
        lambda: Tlvs(receipted_message_id="a\0b"),
        lambda: Tlvs(receipted_message_id="ğ"),  # not latin-1
        lambda: Tlvs(message_payload="text"),  # type: ignore[arg-type]
        lambda: Tlvs(alert_on_message_delivery=False),
        lambda: Tlvs(unknown=((0x0427, b"\x01"),)),  # a standard tag: use message_state
        lambda: Tlvs(unknown=((0x10000, b""),)),
        lambda: Tlvs(unknown=[(0x1400, b"")]),  # type: ignore[arg-type]
        lambda: Tlvs(unknown=((0x1400, "x"),)),  # type: ignore[arg-type]
    ],
)
def test_values_that_cannot_be_encoded_are_refused(build: Any) -> None:
    with pytest.raises(LocalProtocolError):
        build()


def test_unknown_tlv_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Tlvs(not_a_tlv=1)  # type: ignore[call-arg]


def test_limits_are_inclusive() -> None:
    SubmitSm(source_addr="1" * 20, service_type="12345", short_message=bytes(254))
    BindTransmitter(system_id="x" * 15, password="x" * 8, system_type="x" * 12)
    DataSm(source_addr="1" * 64)
    Tlvs(receipted_message_id="x" * 64, message_state=255, qos_time_to_live=(1 << 32) - 1)
    SubmitMulti(dest_address=(DistributionList(),) * 254)
    EnquireLink(sequence_number=0xFFFFFFFF, command_status=0xFFFFFFFF)


def test_non_latin1_text_fails_at_encode() -> None:
    pdu = SubmitSm(destination_addr="ğ")  # one character, but not latin-1
    with pytest.raises(LocalProtocolError):
        encode(pdu)
    with pytest.raises(LocalProtocolError):
        encode(EnquireLink(), sequence_number=1 << 32)


def test_encode_rejects_a_non_pdu() -> None:
    with pytest.raises(LocalProtocolError):
        encode(Pdu())


def test_tlvs_equality_and_repr() -> None:
    assert Tlvs() == NO_TLVS
    assert Tlvs(message_state=None) == NO_TLVS
    a = Tlvs(message_state=2, receipted_message_id="1")
    b = Tlvs(receipted_message_id="1", message_state=2)
    assert a == b
    assert hash(a) == hash(b)
    assert repr(a) == "Tlvs(message_state=2, receipted_message_id='1')"
    assert a.sar_msg_ref_num is None
    assert SubmitSm(tlvs=Tlvs()) == SubmitSm()


# --- response_for / is_response ----------------------------------------------------------------

_PAIRS = [
    (BindReceiver, BindReceiverResp),
    (BindTransmitter, BindTransmitterResp),
    (BindTransceiver, BindTransceiverResp),
    (Unbind, UnbindResp),
    (SubmitSm, SubmitSmResp),
    (SubmitMulti, SubmitMultiResp),
    (DeliverSm, DeliverSmResp),
    (DataSm, DataSmResp),
    (QuerySm, QuerySmResp),
    (CancelSm, CancelSmResp),
    (ReplaceSm, ReplaceSmResp),
    (EnquireLink, EnquireLinkResp),
]


@pytest.mark.parametrize(("request_cls", "response_cls"), _PAIRS)
def test_response_for(request_cls: type[Pdu], response_cls: type[Pdu]) -> None:
    answer = response_for(request_cls(sequence_number=0x7FFFFFFF), S.ESME_RTHROTTLED)
    assert type(answer) is response_cls
    assert answer.sequence_number == 0x7FFFFFFF
    assert answer.command_status == S.ESME_RTHROTTLED
    assert answer.command_id == request_cls.command_id | 0x80000000
    assert is_response(answer.command_id)
    assert not is_response(request_cls.command_id)


@pytest.mark.parametrize("cls", [Outbind, AlertNotification, SubmitSmResp, GenericNack])
def test_response_for_pdus_without_a_response(cls: type[Pdu]) -> None:
    answer = response_for(cls(sequence_number=4), S.ESME_RINVCMDID)
    assert answer == GenericNack(sequence_number=4, command_status=S.ESME_RINVCMDID)


def test_response_for_a_peer_sequence_number_above_the_spec_range() -> None:
    # §3.2 says 1..0x7FFFFFFF, but a peer may send more; we can still answer it.
    answer = response_for(EnquireLink(sequence_number=0xFFFFFFFF))
    assert encode(answer)[12:] == b"\xff\xff\xff\xff"


def test_password_never_appears_in_repr_or_errors() -> None:
    from protocols.errors import LocalProtocolError
    from protocols.pdu import BindTransceiver, Outbind, decode, encode

    pdu = BindTransceiver(system_id="ulak", password="s3cret")
    assert "s3cret" not in repr(pdu) and "s3cret" not in str(pdu)
    assert decode(encode(pdu, 1)) == BindTransceiver(
        sequence_number=1, system_id="ulak", password="s3cret"
    )
    assert "pw" not in repr(Outbind(system_id="a", password="pw"))
    try:
        BindTransceiver(system_id="ulak", password="too-long-secret")
    except LocalProtocolError as exc:
        assert "too-long-secret" not in str(exc)
        assert "password" in str(exc)
    else:
        raise AssertionError("a 15-character password must be refused")
