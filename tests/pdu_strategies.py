"""Hypothesis strategies for every PDU class, built from the codec's own field layouts.

One strategy per field kind (1-octet integer, C-octet string with its maximum, time, short
message, TLVs, submit_multi lists), so a new PDU class is covered as soon as it has a layout.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from protocols import pdu as pdu_module
from protocols import tlv as tlv_module
from protocols._codec import CSTR, DESTS, SM, TIME, TLVS, U8, UNSUCC, Field
from protocols.pdu import DistributionList, Pdu, SmeAddress, Tlvs, UnsuccessSme

__all__ = [
    "ALL_CLASSES",
    "cstrings",
    "pdu_of",
    "pdus",
    "tlvs_values",
]

#: Every concrete PDU class, in layout order.
ALL_CLASSES: tuple[type[Pdu], ...] = tuple(pdu_module._LAYOUTS)

_LATIN1_NO_NUL = st.characters(min_codepoint=1, max_codepoint=0xFF)
_TLV_TABLE: dict[str, tuple[int, int, int, int]] = tlv_module._ENCODE_TABLE
_KNOWN_TAGS = frozenset(tag for tag, _kind, _lo, _hi in _TLV_TABLE.values())


def cstrings(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Latin-1 text without NUL: what a C-octet string field can carry."""
    return st.text(_LATIN1_NO_NUL, min_size=min_size, max_size=max_size)


def _time() -> st.SearchStrategy[str]:
    # §7.1: YYMMDDhhmmsstnnp, or empty. The codec only checks the length.
    return st.one_of(st.just(""), st.text(_LATIN1_NO_NUL, min_size=16, max_size=16))


def _tlv_value(name: str, *, nonempty: bool = False, max_payload: int = 300) -> Any:
    _tag, kind, lo, hi = _TLV_TABLE[name]
    if kind in (1, 2, 4):
        return st.integers(0, (1 << (8 * kind)) - 1)
    if kind == tlv_module._CSTR:
        return cstrings(hi - 1, min_size=1 if nonempty else 0)
    if kind == tlv_module._OCTETS:
        return st.binary(min_size=max(lo, 1 if nonempty else 0), max_size=min(hi, max_payload))
    return st.just(True)


def tlvs_values(
    names: tuple[str, ...] | None = None, *, unknown: bool = True, nonempty: bool = False
) -> st.SearchStrategy[Tlvs]:
    """A Tlvs with any subset of ``names`` (default: all standard TLVs) and unknown tags."""
    chosen = tuple(_TLV_TABLE) if names is None else names
    optional = {name: _tlv_value(name, nonempty=nonempty) for name in chosen}
    unknown_tags = st.integers(0, 0xFFFF).filter(lambda t: t not in _KNOWN_TAGS)
    unknown_items = (
        st.lists(st.tuples(unknown_tags, st.binary(max_size=12)), max_size=3).map(tuple)
        if unknown
        else st.just(())
    )
    return st.builds(
        lambda values, extra: Tlvs(**values, unknown=extra),
        st.fixed_dictionaries({}, optional=optional),
        unknown_items,
    )


def _dest() -> st.SearchStrategy[SmeAddress | DistributionList]:
    return st.one_of(
        st.builds(
            SmeAddress,
            dest_addr_ton=st.integers(0, 255),
            dest_addr_npi=st.integers(0, 255),
            destination_addr=cstrings(20),
        ),
        st.builds(DistributionList, dl_name=cstrings(20)),
    )


def _unsuccess() -> st.SearchStrategy[UnsuccessSme]:
    return st.builds(
        UnsuccessSme,
        dest_addr_ton=st.integers(0, 255),
        dest_addr_npi=st.integers(0, 255),
        destination_addr=cstrings(20),
        error_status_code=st.integers(0, 0xFFFFFFFF),
    )


def field_strategy(field: Field) -> Any:
    """Any value the field can carry."""
    if field.kind == U8:
        return st.integers(0, field.maximum)
    if field.kind == CSTR:
        return cstrings(field.size - 1)
    if field.kind == TIME:
        return _time()
    if field.kind == SM:
        return st.binary(max_size=254)
    if field.kind == TLVS:
        return tlvs_values()
    if field.kind == DESTS:
        return st.lists(_dest(), max_size=4).map(tuple)
    if field.kind == UNSUCC:
        return st.lists(_unsuccess(), max_size=4).map(tuple)
    raise AssertionError(field.kind)


def pdu_of(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    """Any valid instance of ``cls``."""
    kwargs = {f.name: field_strategy(f) for f in pdu_module._LAYOUTS[cls]}
    return st.builds(
        cls,
        sequence_number=st.integers(0, 0xFFFFFFFF),
        command_status=st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF)),
        **kwargs,
    )


def pdus() -> st.SearchStrategy[Pdu]:
    """Any valid PDU of any class."""
    return st.one_of([pdu_of(cls) for cls in ALL_CLASSES])
