"""Receipts and MO messages as the simulated SMSC sends them (deliver_sm, SMPP 3.4 §4.6)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.encoding import choose_encoding
from protocols.pdu import DeliverSm, SubmitSm, Tlvs

from ._settings import RECEIPT_STATES, MoMessage

if TYPE_CHECKING:
    from ._connection import SmscConnection

__all__ = ["PendingReceipt", "mo_deliver_sm", "receipt_deliver_sm", "receipt_text"]

# esm_class bits 2-5 = 0001: "SMSC Delivery Receipt" (SMPP 3.4 §5.2.12).
ESM_CLASS_DELIVERY_RECEIPT = 0x04
# The err: field of the receipt text is SMSC-specific (Appendix B); these are plausible values
# that differ per state, so a gateway that keeps the code can be checked.
_ERROR_CODES = {"DELIVRD": 0, "UNDELIV": 1, "EXPIRED": 2, "REJECTD": 3, "DELETED": 4}
# network_error_code (§5.3.2.31): network type 3 (GSM), then a 2-octet error code.
_GSM_NETWORK = 3
# Appendix B: the receipt quotes the first 20 characters of the original message.
_QUOTED_TEXT = 20
# data_coding values whose short_message is readable as single octets (default, IA5, Latin-1).
_OCTET_TEXT_CODINGS = frozenset({0x00, 0x01, 0x03})
_UDHI = 0x40


@dataclass(slots=True)
class PendingReceipt:
    """A receipt waiting for its time; turned into a deliver_sm only when sent."""

    system_id: str
    origin: SmscConnection | None  # the bind the submit_sm came on; None once it is gone
    message_id: str  # as given in submit_sm_resp (hex)
    state: str  # DELIVRD, UNDELIV, ...
    submit: SubmitSm  # what the receipt reports on (addresses, quoted text)
    submit_time: float  # wall clock


def _quote(submit: SubmitSm) -> bytes:
    """What of the original text a receipt may quote: Appendix B's first 20 characters, and
    nothing when they are not plain octets (a UDH, UCS-2 halves)."""
    if submit.esm_class & _UDHI or submit.data_coding not in _OCTET_TEXT_CODINGS:
        return b""
    return submit.short_message[:_QUOTED_TEXT]


@functools.lru_cache(maxsize=256)
def _receipt_tail(state: str, submit_minute: int, done_minute: int) -> bytes:
    """Everything of the receipt text after the id: one format per state and pair of minutes
    (Appendix B dates are YYMMDDhhmm, in UTC here), not one per receipt."""
    delivered = 1 if state == "DELIVRD" else 0
    submit_date = time.strftime("%y%m%d%H%M", time.gmtime(submit_minute * 60))
    done_date = time.strftime("%y%m%d%H%M", time.gmtime(done_minute * 60))
    return (
        f" sub:001 dlvrd:{delivered:03d} submit date:{submit_date} done date:{done_date}"
        f" stat:{state} err:{_ERROR_CODES.get(state, 0):03d} text:"
    ).encode("ascii")


def receipt_text(receipt: PendingReceipt, *, decimal_id: bool, done_time: float) -> bytes:
    """The receipt text of SMPP 3.4 Appendix B (``id:... sub:... dlvrd:... stat:... err:...``).

    ``decimal_id`` writes the hex message id of the submit_sm_resp in decimal, as some SMSCs do
    (PROTOCOL-NOTES, Delivery receipts), so that the gateway's normalisation is exercised.
    """
    message_id = str(int(receipt.message_id, 16)) if decimal_id else receipt.message_id
    tail = _receipt_tail(receipt.state, int(receipt.submit_time // 60), int(done_time // 60))
    return b"id:" + message_id.encode("ascii") + tail + _quote(receipt.submit)


def receipt_deliver_sm(receipt: PendingReceipt, *, decimal_id: bool, done_time: float) -> DeliverSm:
    """The deliver_sm carrying ``receipt``: text per Appendix B, and the TLVs that carry the
    same facts unambiguously (receipted_message_id §5.3.2.12, message_state §5.3.2.35,
    network_error_code §5.3.2.31 for failures)."""
    error = _ERROR_CODES.get(receipt.state, 0)
    submit = receipt.submit
    # The receipt comes from the handset that got the message, to its original sender.
    return DeliverSm(
        source_addr_ton=submit.dest_addr_ton,
        source_addr_npi=submit.dest_addr_npi,
        source_addr=submit.destination_addr,
        dest_addr_ton=submit.source_addr_ton,
        dest_addr_npi=submit.source_addr_npi,
        destination_addr=submit.source_addr,
        esm_class=ESM_CLASS_DELIVERY_RECEIPT,
        short_message=receipt_text(receipt, decimal_id=decimal_id, done_time=done_time),
        tlvs=Tlvs(
            receipted_message_id=receipt.message_id,
            message_state=RECEIPT_STATES[receipt.state],
            network_error_code=(
                bytes((_GSM_NETWORK,)) + error.to_bytes(2, "big") if error else None
            ),
        ),
    )


def mo_deliver_sm(mo: MoMessage) -> DeliverSm:
    """An MO message as a deliver_sm (esm_class 0: a plain short message, §5.2.12).

    The text goes in the GSM default alphabet when it can (one septet per octet, unpacked, as
    SMSCs send data_coding 0 over SMPP), else UCS-2; a text longer than one SMS travels in
    message_payload (§5.3.2.32) rather than being split here.
    """
    encoded = choose_encoding(mo.text, national_shift="none")
    if encoded.parts == 1:
        return DeliverSm(
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=mo.source_addr,
            destination_addr=mo.destination_addr,
            data_coding=encoded.data_coding,
            short_message=encoded.units,
        )
    return DeliverSm(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=mo.source_addr,
        destination_addr=mo.destination_addr,
        data_coding=encoded.data_coding,
        tlvs=Tlvs(message_payload=encoded.units),
    )
