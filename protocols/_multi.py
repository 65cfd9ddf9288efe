"""The destination lists of submit_multi (§4.5.1.1) and submit_multi_resp (§4.5.2.1).

``number_of_dests`` / ``no_unsuccess`` are derived from the tuple lengths. Each destination is
tagged by dest_flag: 1 for an SME address, 2 for a distribution list name (§5.2.25).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _codec
from .constants import CommandStatus
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DistributionList",
    "SmeAddress",
    "UnsuccessSme",
    "bad_dests",
    "bad_unsucc",
    "decode_dests",
    "decode_unsucc",
    "encode_dests",
    "encode_unsucc",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SmeAddress:
    """A submit_multi destination that is an SME address (dest_flag 1, §4.5.1.1)."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""  # max 20

    def __post_init__(self) -> None:
        _check_address(self, self.dest_addr_ton, self.dest_addr_npi, self.destination_addr)


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributionList:
    """A submit_multi destination that is a distribution list name (dest_flag 2, §4.5.1.1)."""

    dl_name: str = ""  # max 20

    def __post_init__(self) -> None:
        if not (isinstance(self.dl_name, str) and len(self.dl_name) <= 20):
            raise LocalProtocolError(f"dl_name={self.dl_name!r}: not a str of at most 20")
        if "\0" in self.dl_name:
            raise LocalProtocolError("dl_name contains NUL")


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsuccessSme:
    """One failed destination in submit_multi_resp (§4.5.2.1)."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""  # max 20
    error_status_code: int = 0  # the command_status for this destination

    def __post_init__(self) -> None:
        _check_address(self, self.dest_addr_ton, self.dest_addr_npi, self.destination_addr)
        code = self.error_status_code
        if not (isinstance(code, int) and 0 <= code <= 0xFFFFFFFF):
            raise LocalProtocolError(f"error_status_code={code!r}: not a 4-octet integer")


def _check_address(owner: object, ton: object, npi: object, addr: object) -> None:
    for name, v in (("dest_addr_ton", ton), ("dest_addr_npi", npi)):
        if not (isinstance(v, int) and 0 <= v <= 255):
            raise LocalProtocolError(f"{type(owner).__name__}.{name}={v!r}: not 0..255")
    if not (isinstance(addr, str) and len(addr) <= 20 and "\0" not in addr):
        raise LocalProtocolError(f"destination_addr={addr!r}: not a str of at most 20")


def _read_cstr(
    data: bytes, pos: int, end: int, size: int, status: int, name: str, seq: int, cid: int
) -> tuple[str, int]:
    lim = pos + size
    i = data.find(0, pos, min(lim, end))
    if i < 0:
        raise _codec.cstr_error(name, size, status, pos, end, seq, cid)
    return data[pos:i].decode("latin-1"), i + 1


def _truncated(seq: int, cid: int) -> RemoteProtocolError:
    return _codec.error("PDU body cut short", CommandStatus.ESME_RINVCMDLEN, seq, cid)


def decode_dests(
    data: bytes, pos: int, end: int, seq: int, cid: int
) -> tuple[tuple[SmeAddress | DistributionList, ...], int]:
    """number_of_dests and dest_address(es) at ``pos``; returns them and the next position."""
    if pos >= end:
        raise _truncated(seq, cid)
    count = data[pos]
    pos += 1
    if count > 254:  # §4.5.1: number_of_dests at most 254
        raise _codec.error(f"number_of_dests {count}", CommandStatus.ESME_RINVNUMDESTS, seq, cid)
    out: list[SmeAddress | DistributionList] = []
    for _ in range(count):
        if pos >= end:
            raise _truncated(seq, cid)
        flag = data[pos]
        pos += 1
        if flag == 1:
            if pos + 2 > end:
                raise _truncated(seq, cid)
            ton, npi = data[pos], data[pos + 1]
            addr, pos = _read_cstr(
                data, pos + 2, end, 21, CommandStatus.ESME_RINVDSTADR, "destination_addr", seq, cid
            )
            out.append(SmeAddress(dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr))
        elif flag == 2:
            name, pos = _read_cstr(
                data, pos, end, 21, CommandStatus.ESME_RINVDLNAME, "dl_name", seq, cid
            )
            out.append(DistributionList(dl_name=name))
        else:
            raise _codec.error(f"dest_flag {flag}", CommandStatus.ESME_RINVDESTFLAG, seq, cid)
    return tuple(out), pos


def encode_dests(dests: tuple[SmeAddress | DistributionList, ...]) -> bytes:
    """number_of_dests, then each destination with its dest_flag."""
    parts = [bytes((len(dests),))]
    for d in dests:
        if isinstance(d, SmeAddress):
            raw = d.destination_addr.encode("latin-1")
            parts.append(b"\x01%c%c%s\0" % (d.dest_addr_ton, d.dest_addr_npi, raw))
        else:
            parts.append(b"\x02%s\0" % d.dl_name.encode("latin-1"))
    return b"".join(parts)


def bad_dests(dests: object) -> bool:
    """False for a valid dest_address tuple; raises LocalProtocolError otherwise."""
    if not isinstance(dests, tuple) or len(dests) > 254:
        raise LocalProtocolError(f"dest_address={dests!r}: not a tuple of at most 254")
    for d in dests:
        if not isinstance(d, (SmeAddress, DistributionList)):
            raise LocalProtocolError(f"dest_address: {d!r} is not SmeAddress/DistributionList")
    return False


def decode_unsucc(
    data: bytes, pos: int, end: int, seq: int, cid: int
) -> tuple[tuple[UnsuccessSme, ...], int]:
    """no_unsuccess and unsuccess_sme(s) at ``pos``; returns them and the next position."""
    if pos >= end:
        raise _truncated(seq, cid)
    count = data[pos]
    pos += 1
    out: list[UnsuccessSme] = []
    for _ in range(count):
        if pos + 2 > end:
            raise _truncated(seq, cid)
        ton, npi = data[pos], data[pos + 1]
        addr, pos = _read_cstr(
            data, pos + 2, end, 21, CommandStatus.ESME_RINVDSTADR, "destination_addr", seq, cid
        )
        if pos + 4 > end:
            raise _truncated(seq, cid)
        code = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        out.append(
            UnsuccessSme(
                dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr, error_status_code=code
            )
        )
    return tuple(out), pos


def encode_unsucc(items: tuple[UnsuccessSme, ...]) -> bytes:
    """no_unsuccess, then each failed destination with its error_status_code."""
    parts = [bytes((len(items),))]
    for u in items:
        raw = u.destination_addr.encode("latin-1")
        parts.append(
            b"%c%c%s\0%s"
            % (u.dest_addr_ton, u.dest_addr_npi, raw, u.error_status_code.to_bytes(4, "big"))
        )
    return b"".join(parts)


def bad_unsucc(items: object) -> bool:
    """False for a valid unsuccess_sme tuple; raises LocalProtocolError otherwise."""
    if not isinstance(items, tuple) or len(items) > 255:
        raise LocalProtocolError(f"unsuccess_sme={items!r}: not a tuple of at most 255")
    for u in items:
        if not isinstance(u, UnsuccessSme):
            raise LocalProtocolError(f"unsuccess_sme: {u!r} is not an UnsuccessSme")
    return False
