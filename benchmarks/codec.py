"""PDU codec throughput: Ulak's ``protocols.pdu`` against smpplib 2.2.4, in the same process.

Two realistic PDUs: a submit_sm (a short GSM-7 OTP text, registered_delivery, three TLVs) and a
deliver_sm carrying a delivery receipt (receipt text plus receipted_message_id and
message_state). For each library:

- encode = build the PDU object from field values, then serialize it (what a gateway does per
  message; smpplib cannot serialize without building its object either). This is the figure
  the ``ratio_encode`` target is about;
- decode = bytes of one PDU to an object with every field;
- serialize = an already built object to bytes (for information: where the time goes).

The box this runs on is small and shared, so each figure is the best of many short rounds, and
every round runs all eight measurements back to back: the best round of each is a quiet moment,
and quiet moments come to both libraries alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from smpplib import smpp

from protocols.pdu import DeliverSm, Pdu, SubmitSm, decode, encode
from protocols.tlv import Tlvs

__all__ = ["run", "smpplib_encode_rate"]

_ROUNDS = 15
_OTP = b"Your code is 123456. Do not share it."
_RECEIPT = (
    b"id:0A1B2C3D4E sub:001 dlvrd:001 submit date:2511250800 done date:2511250801 "
    b"stat:DELIVRD err:000 text:Your code is 1234"
)


class _SeqStub:
    """smpplib builds PDUs through a client that hands out sequence numbers (STACK.md §7)."""

    sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


_STUB = _SeqStub()


def _ours_submit() -> Pdu:
    return SubmitSm(
        source_addr_ton=5,
        source_addr="ULAK",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905321234567",
        registered_delivery=1,
        short_message=_OTP,
        tlvs=Tlvs(user_message_reference=4242, source_port=1234, destination_port=5678),
    )


def _smpplib_submit() -> Any:
    p = smpp.make_pdu(
        "submit_sm",
        client=_STUB,
        service_type="",
        source_addr_ton=5,
        source_addr_npi=0,
        source_addr="ULAK",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905321234567",
        registered_delivery=1,
        data_coding=0,
        short_message=_OTP,
        user_message_reference=4242,
        source_port=1234,
        destination_port=5678,
    )
    p.sequence = 7  # after construction: make_pdu would ignore it (STACK.md §7)
    return p


def _ours_deliver() -> Pdu:
    return DeliverSm(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="905321234567",
        dest_addr_ton=5,
        destination_addr="ULAK",
        esm_class=0x04,
        short_message=_RECEIPT,
        tlvs=Tlvs(receipted_message_id="0A1B2C3D4E", message_state=2),
    )


def _smpplib_deliver() -> Any:
    p = smpp.make_pdu(
        "deliver_sm",
        client=_STUB,
        service_type="",
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="905321234567",
        dest_addr_ton=5,
        dest_addr_npi=0,
        destination_addr="ULAK",
        esm_class=0x04,
        data_coding=0,
        short_message=_RECEIPT,
        receipted_message_id="0A1B2C3D4E",
        message_state=2,
    )
    p.sequence = 9
    return p


def _cases() -> dict[str, Callable[[], object]]:
    """name -> one operation; names are ``<pdu>_<op>_<library>``."""
    sub_ours, dlv_ours = _ours_submit(), _ours_deliver()
    sub_lib, dlv_lib = _smpplib_submit(), _smpplib_deliver()
    sub_raw, dlv_raw = encode(sub_ours, 7), encode(dlv_ours, 9)
    # Both sides must mean the same PDU, or the comparison is void.
    if decode(sub_lib.generate()) != decode(sub_raw):
        raise AssertionError("smpplib's submit_sm differs from ours")
    if decode(dlv_lib.generate()) != decode(dlv_raw):
        raise AssertionError("smpplib's deliver_sm differs from ours")

    def parse(raw: bytes) -> Callable[[], object]:
        return lambda: smpp.parse_pdu(raw, client=_STUB)

    return {
        "submit_sm_encode_ours": lambda: encode(_ours_submit(), 7),
        "submit_sm_encode_smpplib": _smpplib_encode,
        "submit_sm_decode_ours": lambda: decode(sub_raw),
        "submit_sm_decode_smpplib": parse(sub_raw),
        "submit_sm_serialize_ours": lambda: encode(sub_ours, 7),
        "submit_sm_serialize_smpplib": sub_lib.generate,
        "deliver_sm_encode_ours": lambda: encode(_ours_deliver(), 9),
        "deliver_sm_encode_smpplib": lambda: _smpplib_deliver().generate(),
        "deliver_sm_decode_ours": lambda: decode(dlv_raw),
        "deliver_sm_decode_smpplib": parse(dlv_raw),
        "deliver_sm_serialize_ours": lambda: encode(dlv_ours, 9),
        "deliver_sm_serialize_smpplib": dlv_lib.generate,
    }


def _batch(call: Callable[[], object], n: int) -> float:
    """Seconds per operation over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def smpplib_encode_rate(seconds: float = 0.3) -> float:
    """smpplib's submit_sm encode rate (build and serialize, PDUs/s) in this process now, the
    best of ``_ROUNDS`` short rounds over about ``seconds``: a yardstick of this machine's
    speed at the moment (see :mod:`benchmarks.yardstick`)."""
    size = max(10, int(seconds / _ROUNDS / _batch(_smpplib_encode, 20)))
    return 1.0 / min(_batch(_smpplib_encode, size) for _ in range(_ROUNDS))


def _smpplib_encode() -> object:
    return _smpplib_submit().generate()


_PDUS = ("submit_sm", "deliver_sm")
_OPS = ("encode", "decode", "serialize")


def run(*, seconds: float = 1.0, as_json: bool = False) -> dict[str, float]:
    """Measure, print a table (and one JSON line when ``as_json``), return the figures.

    Args:
        seconds: about how long each of the twelve measurements runs in total.
        as_json: also print one JSON line with the rates and ratios.

    Returns:
        ``<pdu>_<op>_ours`` / ``<pdu>_<op>_smpplib`` rates in PDUs per second and
        ``<pdu>_<op>_ratio`` for op in encode (build the PDU object and serialize it), decode
        and serialize (an already built object); ``ratio_encode`` / ``ratio_decode`` are the
        smaller ratio of the two PDU types.
    """
    cases = _cases()
    # A batch size per case so that each round takes about seconds / _ROUNDS.
    sizes: dict[str, int] = {}
    for name, call in cases.items():
        per_op = min(_batch(call, 20), _batch(call, 20))
        sizes[name] = max(10, int(seconds / _ROUNDS / max(per_op, 1e-9)))
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(_ROUNDS):
        for name, call in cases.items():
            best[name] = min(best[name], _batch(call, sizes[name]))

    result: dict[str, float] = {name: round(1.0 / t, 1) for name, t in best.items()}
    for pdu in _PDUS:
        for op in _OPS:
            key = f"{pdu}_{op}"
            result[f"{key}_ratio"] = round(result[f"{key}_ours"] / result[f"{key}_smpplib"], 2)
    for op in ("encode", "decode"):
        result[f"ratio_{op}"] = min(result[f"{pdu}_{op}_ratio"] for pdu in _PDUS)

    print(f"PDU codec throughput in PDUs/s, best of {_ROUNDS} rounds (smpplib 2.2.4 as baseline)")
    print("encode = build the PDU object and serialize it; serialize = an already built object")
    print(f"{'PDU':<12}{'op':<11}{'ours':>12}{'smpplib':>12}{'ratio':>9}")
    for pdu in _PDUS:
        for op in _OPS:
            key = f"{pdu}_{op}"
            print(
                f"{pdu:<12}{op:<11}{result[f'{key}_ours']:>12,.0f}"
                f"{result[f'{key}_smpplib']:>12,.0f}{result[f'{key}_ratio']:>8.1f}x"
            )
    if as_json:
        print(json.dumps(result, sort_keys=True))
    return result
