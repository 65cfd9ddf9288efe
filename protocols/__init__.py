"""Sans-IO SMPP 3.4: PDU codec, session state machine, encodings, segmentation, receipts.

Nothing here imports trio, does I/O or reads the clock: bytes and ``now`` come in, events and
bytes go out (the h11 model). The submodules hold the details; the names most callers need are
re-exported here.
"""

from .constants import (
    RESPONSE_BIT,
    CommandId,
    CommandStatus,
    DataCoding,
    EsmClass,
    MessageState,
    RegisteredDelivery,
    TlvTag,
)
from .encoding import (
    DecodedMessage,
    EncodedText,
    MessageTooLongError,
    NationalShift,
    TextEncoding,
    UnencodableTextError,
    choose_encoding,
    decode_short_message,
    encode_text,
)
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .pdu import (
    NO_TLVS,
    DeliverSm,
    Pdu,
    PduReader,
    SubmitSm,
    SubmitSmResp,
    Tlvs,
    decode,
    encode,
    is_response,
    response_for,
)
from .receipts import Receipt, ReceiptParseError, message_id_keys, parse_receipt
from .segmentation import Reassembler, ReferenceAllocator, Segment, SegmentedMessage, segment
from .session import NEED_DATA, Role, Session, SessionConfig, SessionState
from .smpp_time import RelativeTime, SmppTimeError, format_time, parse_time

__all__ = [
    "NEED_DATA",
    "NO_TLVS",
    "RESPONSE_BIT",
    "CommandId",
    "CommandStatus",
    "DataCoding",
    "DecodedMessage",
    "DeliverSm",
    "EncodedText",
    "EsmClass",
    "LocalProtocolError",
    "MessageState",
    "MessageTooLongError",
    "NationalShift",
    "Pdu",
    "PduReader",
    "ProtocolError",
    "Reassembler",
    "Receipt",
    "ReceiptParseError",
    "ReferenceAllocator",
    "RegisteredDelivery",
    "RelativeTime",
    "RemoteProtocolError",
    "Role",
    "Segment",
    "SegmentedMessage",
    "Session",
    "SessionConfig",
    "SessionState",
    "SmppTimeError",
    "SubmitSm",
    "SubmitSmResp",
    "TextEncoding",
    "TlvTag",
    "Tlvs",
    "UnencodableTextError",
    "choose_encoding",
    "decode",
    "decode_short_message",
    "encode",
    "encode_text",
    "format_time",
    "is_response",
    "message_id_keys",
    "parse_receipt",
    "parse_time",
    "response_for",
    "segment",
]
