"""SMPP 3.4 numbers: command ids (§5.1.2.1), command statuses (§5.1.3), TLV tags (§5.3.2), and
the bit fields of esm_class (§5.2.12), registered_delivery (§5.2.17) and data_coding (§5.2.19).

PDU fields hold plain ``int`` for these: a peer may send a status or tag that is not listed here,
and that must not crash the decoder. Compare them with the enums (``IntEnum`` members compare
equal to their values).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = [
    "RESPONSE_BIT",
    "CommandId",
    "CommandStatus",
    "DataCoding",
    "EsmClass",
    "MessageState",
    "RegisteredDelivery",
    "TlvTag",
]

#: Bit 31 of command_id marks a response (§5.1.2.1: "response command_ids ... are the request
#: command_id with bit 31 set").
RESPONSE_BIT: Final = 0x80000000


class CommandId(IntEnum):
    """command_id values, SMPP 3.4 §5.1.2.1 (Table 5-1)."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class CommandStatus(IntEnum):
    """command_status values, SMPP 3.4 §5.1.3 (Table 5-2). Unlisted values are reserved."""

    ESME_ROK = 0x00000000  # No error
    ESME_RINVMSGLEN = 0x00000001  # Message length is invalid
    ESME_RINVCMDLEN = 0x00000002  # Command length is invalid
    ESME_RINVCMDID = 0x00000003  # Invalid command ID
    ESME_RINVBNDSTS = 0x00000004  # Incorrect BIND status for given command
    ESME_RALYBND = 0x00000005  # ESME already in bound state
    ESME_RINVPRTFLG = 0x00000006  # Invalid priority flag
    ESME_RINVREGDLVFLG = 0x00000007  # Invalid registered delivery flag
    ESME_RSYSERR = 0x00000008  # System error
    ESME_RINVSRCADR = 0x0000000A  # Invalid source address
    ESME_RINVDSTADR = 0x0000000B  # Invalid destination address
    ESME_RINVMSGID = 0x0000000C  # Message ID is invalid
    ESME_RBINDFAIL = 0x0000000D  # Bind failed
    ESME_RINVPASWD = 0x0000000E  # Invalid password
    ESME_RINVSYSID = 0x0000000F  # Invalid system ID
    ESME_RCANCELFAIL = 0x00000011  # Cancel SM failed
    ESME_RREPLACEFAIL = 0x00000013  # Replace SM failed
    ESME_RMSGQFUL = 0x00000014  # Message queue full
    ESME_RINVSERTYP = 0x00000015  # Invalid service type
    ESME_RINVNUMDESTS = 0x00000033  # Invalid number of destinations
    ESME_RINVDLNAME = 0x00000034  # Invalid distribution list name
    ESME_RINVDESTFLAG = 0x00000040  # Destination flag is invalid (submit_multi)
    ESME_RINVSUBREP = 0x00000042  # Invalid 'submit with replace' request
    ESME_RINVESMCLASS = 0x00000043  # Invalid esm_class field data
    ESME_RCNTSUBDL = 0x00000044  # Cannot submit to distribution list
    ESME_RSUBMITFAIL = 0x00000045  # submit_sm or submit_multi failed
    ESME_RINVSRCTON = 0x00000048  # Invalid source address TON
    ESME_RINVSRCNPI = 0x00000049  # Invalid source address NPI
    ESME_RINVDSTTON = 0x00000050  # Invalid destination address TON
    ESME_RINVDSTNPI = 0x00000051  # Invalid destination address NPI
    ESME_RINVSYSTYP = 0x00000053  # Invalid system_type field
    ESME_RINVREPFLAG = 0x00000054  # Invalid replace_if_present flag
    ESME_RINVNUMMSGS = 0x00000055  # Invalid number of messages
    ESME_RTHROTTLED = 0x00000058  # Throttling error (ESME has exceeded allowed message limits)
    ESME_RINVSCHED = 0x00000061  # Invalid scheduled delivery time
    ESME_RINVEXPIRY = 0x00000062  # Invalid message validity period (expiry time)
    ESME_RINVDFTMSGID = 0x00000063  # Predefined message invalid or not found
    ESME_RX_T_APPN = 0x00000064  # ESME receiver temporary app error code
    ESME_RX_P_APPN = 0x00000065  # ESME receiver permanent app error code
    ESME_RX_R_APPN = 0x00000066  # ESME receiver reject message error code
    ESME_RQUERYFAIL = 0x00000067  # query_sm request failed
    ESME_RINVOPTPARSTREAM = 0x000000C0  # Error in the optional part of the PDU body
    ESME_ROPTPARNOTALLWD = 0x000000C1  # Optional parameter not allowed
    ESME_RINVPARLEN = 0x000000C2  # Invalid parameter length
    ESME_RMISSINGOPTPARAM = 0x000000C3  # Expected optional parameter missing
    ESME_RINVOPTPARAMVAL = 0x000000C4  # Invalid optional parameter value
    ESME_RDELIVERYFAILURE = 0x000000FE  # Delivery failure (data_sm_resp)
    ESME_RUNKNOWNERR = 0x000000FF  # Unknown error


class TlvTag(IntEnum):
    """Optional parameter tags, SMPP 3.4 §5.3.2 (Table 5-3)."""

    DEST_ADDR_SUBUNIT = 0x0005
    DEST_NETWORK_TYPE = 0x0006
    DEST_BEARER_TYPE = 0x0007
    DEST_TELEMATICS_ID = 0x0008
    SOURCE_ADDR_SUBUNIT = 0x000D
    SOURCE_NETWORK_TYPE = 0x000E
    SOURCE_BEARER_TYPE = 0x000F
    SOURCE_TELEMATICS_ID = 0x0010
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    MS_MSG_WAIT_FACILITIES = 0x0030
    PRIVACY_INDICATOR = 0x0201
    SOURCE_SUBADDRESS = 0x0202
    DEST_SUBADDRESS = 0x0203
    USER_MESSAGE_REFERENCE = 0x0204
    USER_RESPONSE_CODE = 0x0205
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    CALLBACK_NUM_PRES_IND = 0x0302
    CALLBACK_NUM_ATAG = 0x0303
    NUMBER_OF_MESSAGES = 0x0304
    CALLBACK_NUM = 0x0381
    DPF_RESULT = 0x0420
    SET_DPF = 0x0421
    MS_AVAILABILITY_STATUS = 0x0422
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427
    USSD_SERVICE_OP = 0x0501
    DISPLAY_TIME = 0x1201
    SMS_SIGNAL = 0x1203
    MS_VALIDITY = 0x1204
    ALERT_ON_MESSAGE_DELIVERY = 0x130C
    ITS_REPLY_TYPE = 0x1380
    ITS_SESSION_INFO = 0x1383


class EsmClass:
    """esm_class bits, SMPP 3.4 §5.2.12. Combine with ``|``; test with ``&``."""

    # Bits 1-0: messaging mode (submit_sm / submit_multi / data_sm).
    MODE_MASK: Final = 0x03
    MODE_DEFAULT: Final = 0x00  # SMSC default mode (usually store and forward)
    MODE_DATAGRAM: Final = 0x01
    MODE_FORWARD: Final = 0x02  # transaction mode
    MODE_STORE_AND_FORWARD: Final = 0x03
    # Bits 5-2: message type.
    TYPE_MASK: Final = 0x3C
    TYPE_DEFAULT: Final = 0x00
    TYPE_SMSC_DELIVERY_RECEIPT: Final = 0x04  # deliver_sm carrying a delivery receipt
    TYPE_ESME_DELIVERY_ACK: Final = 0x08
    TYPE_ESME_MANUAL_ACK: Final = 0x10
    TYPE_CONVERSATION_ABORT: Final = 0x18  # Korean CDMA
    TYPE_INTERMEDIATE_NOTIFICATION: Final = 0x20
    # Bits 7-6: GSM network specific features.
    UDHI: Final = 0x40  # short_message starts with a User Data Header
    REPLY_PATH: Final = 0x80


class RegisteredDelivery:
    """registered_delivery bits, SMPP 3.4 §5.2.17."""

    SMSC_RECEIPT_MASK: Final = 0x03
    SMSC_RECEIPT_NONE: Final = 0x00
    SMSC_RECEIPT_ALWAYS: Final = 0x01  # on success or failure
    SMSC_RECEIPT_ON_FAILURE: Final = 0x02
    SME_ACK_MASK: Final = 0x0C
    INTERMEDIATE_NOTIFICATION: Final = 0x10


class DataCoding:
    """data_coding values, SMPP 3.4 §5.2.19 (the ones a gateway meets in practice)."""

    SMSC_DEFAULT: Final = 0x00  # GSM 03.38 for almost every operator (PROTOCOL-NOTES.md)
    IA5: Final = 0x01  # IA5 / ASCII
    OCTET_UNSPECIFIED_2: Final = 0x02
    LATIN_1: Final = 0x03
    OCTET_UNSPECIFIED: Final = 0x04  # 8-bit binary
    JIS: Final = 0x05
    CYRILLIC: Final = 0x06
    LATIN_HEBREW: Final = 0x07
    UCS2: Final = 0x08  # UCS-2 big endian (UTF-16 in practice)
    PICTOGRAM: Final = 0x09
    ISO_2022_JP: Final = 0x0A
    EXTENDED_KANJI: Final = 0x0D
    KS_C_5601: Final = 0x0E


class MessageState(IntEnum):
    """message_state values (query_sm_resp, the message_state TLV), SMPP 3.4 §5.2.28."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8
