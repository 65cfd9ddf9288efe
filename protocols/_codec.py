"""Code generation for the PDU codec: per PDU class, a decoder, an encoder and ``__init__``,
built once at import from the class's field layout in :mod:`protocols.pdu` (SMPP 3.4 §4).

Why generate code: a table-driven loop pays a Python-level branch and lookup per field, which
is most of the cost of a 20-field submit_sm. Generated code reads like the hand-written codec
one would write per PDU (``dataclasses`` builds ``__init__`` the same way), yet the layout is
one table, so the directions cannot drift. ``pytest`` checks them against each other and
against smpplib.

Each class gets two decoders. The *careful* one checks every step and raises the precise
RemoteProtocolError; it is the specification. The *fast* one matches all C-octet strings with
one regular expression and hands anything unusual back to the careful one, so both accept
exactly the same PDUs (``tests/test_pdu.py`` mutates PDUs to check that).

Layout kinds (§3.1 data types):

- ``U8``: 1-octet integer, optionally range checked (priority_flag, replace_if_present_flag).
- ``CSTR``: C-octet string of at most ``size`` octets including the NUL (§3.1 "Var. max").
- ``TIME``: C-octet string that is empty or exactly 16 characters (§7.1: ``YYMMDDhhmmsstnnp``).
- ``SM``: sm_length (1 octet, at most 254, §5.2.21) followed by that many octets.
- ``DESTS`` / ``UNSUCC``: the counted lists of submit_multi (§4.5.1.1) and its response
  (§4.5.2.1), decoded by helper functions.
- ``TLVS``: the optional parameters to the end of the PDU (§3.2.4).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .constants import CommandStatus
from .errors import LocalProtocolError, RemoteProtocolError

U8: Final = "u8"
CSTR: Final = "cstr"
TIME: Final = "time"
SM: Final = "sm"
DESTS: Final = "dests"
UNSUCC: Final = "unsucc"
TLVS: Final = "tlvs"

HEADER: Final = struct.Struct(">IIII")
MAX_SM_LENGTH: Final = 254  # §5.2.21: sm_length 0..254

_RINVCMDLEN: Final = int(CommandStatus.ESME_RINVCMDLEN)
_RINVMSGLEN: Final = int(CommandStatus.ESME_RINVMSGLEN)


#: command_id -> decoder ``(data, sequence_number, command_status) -> Pdu``, filled by
#: :mod:`protocols.pdu`; the reader and ``decode`` share it.
DECODERS: Final[dict[int, Callable[[bytes, int, int], Any]]] = {}


@dataclass(frozen=True, slots=True)
class Field:
    """One body field: its spec name, kind, maximum size and the status for a bad value."""

    name: str
    kind: str
    size: int = 1  # CSTR / TIME: maximum octets including the NUL
    status: int = _RINVCMDLEN  # command_status when the peer sends a bad value
    maximum: int = 255  # U8: largest allowed value


def error(message: str, status: int, sequence_number: int, command_id: int) -> RemoteProtocolError:
    """The exception for a malformed PDU (raised by the caller, so tracebacks stay short)."""
    return RemoteProtocolError(
        message, command_status=status, sequence_number=sequence_number, command_id=command_id
    )


def framing_error(message: str) -> RemoteProtocolError:
    """A bad command_length: the header cannot be trusted, so sequence_number 0 (§3.2)."""
    return RemoteProtocolError(message, command_status=_RINVCMDLEN)


def check_command_length(length: int, maximum: int) -> None:
    """Raise the framing error for a command_length below the header or above ``maximum``."""
    if length < 16:
        raise framing_error(f"command_length {length} is below the 16-octet header")
    if length > maximum:
        raise framing_error(f"command_length {length} is above the limit {maximum}")


def unknown_command(command_id: int, seq: int) -> RemoteProtocolError:
    """ESME_RINVCMDID for a command_id SMPP 3.4 does not define (§5.1.2.1)."""
    return RemoteProtocolError(
        f"unknown command_id 0x{command_id:08X}",
        command_status=CommandStatus.ESME_RINVCMDID,
        sequence_number=seq,
        command_id=command_id,
    )


def cstr_error(
    name: str, size: int, status: int, pos: int, end: int, sequence_number: int, command_id: int
) -> RemoteProtocolError:
    """No NUL where a C-octet string of at most ``size`` octets should end.

    When the body ends before ``size`` octets, the PDU is cut short (command_length too small,
    ESME_RINVCMDLEN); otherwise the field itself is too long and gets its own status.
    """
    if end - pos < size:
        return error(
            f"{name} runs past the end of the PDU", _RINVCMDLEN, sequence_number, command_id
        )
    return error(f"{name} longer than {size - 1} octets", status, sequence_number, command_id)


def _emit_cstr(lines: list[str], f: Field, var: str, indent: str) -> None:
    # data ends where the PDU ends, so find() cannot run into the next PDU.
    lines += [
        f"{indent}i = data.find(0, pos, pos + {f.size})",
        f"{indent}if i < 0:",
        f"{indent}    raise cstr_error({f.name!r}, {f.size}, {f.status}, pos, end, seq, CID)",
    ]
    if f.kind == TIME:
        # §7.1: absolute or relative time, 16 characters, or NULL.
        lines += [
            f"{indent}if i != pos and i != pos + 16:",
            f"{indent}    raise error('{f.name} is neither empty nor 16 characters', "
            f"{f.status}, seq, CID)",
        ]
    lines += [
        f"{indent}{var} = '' if i == pos else data[pos:i].decode('latin-1')",
        f"{indent}pos = i + 1",
    ]


def _emit_bytes(lines: list[str], group: list[tuple[str, Field]], indent: str) -> None:
    """Read a run of 1-octet fields; reading past the end raises IndexError (caught)."""
    n = len(group)
    for k, (var, _f) in enumerate(group):
        lines.append(f"{indent}{var} = data[pos{f' + {k}' if k else ''}]")
    lines.append(f"{indent}pos += {n}")
    for var, f in group:
        if f.maximum < 255:
            lines.append(f"{indent}if {var} > {f.maximum}:")
            lines.append(
                f"{indent}    raise error('{f.name} ' + str({var}) + ' out of range', "
                f"{f.status}, seq, CID)"
            )


def _lenient_lines(lenient_empty: bool | str) -> list[str]:
    if lenient_empty == "always":
        return ["    if end == 16:", "        return empty(seq, status)"]
    if lenient_empty:
        # A failed response may come with no body at all (e.g. submit_sm_resp without a
        # message_id): decode it to the defaults instead of rejecting the peer's answer.
        return ["    if end == 16 and status:", "        return empty(seq, status)"]
    return []


def _build_lines(layout: tuple[Field, ...]) -> list[str]:
    # Fill a mutable twin of the class, then make it the frozen class (see mutable_twin).
    lines = ["    o = new(MUT)", "    o.sequence_number = seq", "    o.command_status = status"]
    lines += [f"    o.{f.name} = f_{f.name}" for f in layout]
    return [*lines, "    o.__class__ = CLS", "    return o"]


def _careful_source(layout: tuple[Field, ...], lenient_empty: bool | str) -> str:
    """``careful(data, seq, status)``: checks every step and raises the precise error.

    ``data`` is exactly one PDU, header included.
    """
    lines = ["def careful(data, seq, status):", "    end = len(data)", "    pos = 16"]
    lines += _lenient_lines(lenient_empty)
    ind = "        "
    body: list[str] = []
    group: list[tuple[str, Field]] = []
    has_tlvs = False
    for f in layout:
        var = f"f_{f.name}"
        if f.kind == U8:
            group.append((var, f))
            continue
        if f.kind == SM:
            group.append(("sm_length", Field("sm_length", U8, 1, _RINVMSGLEN, MAX_SM_LENGTH)))
        if group:
            _emit_bytes(body, group, ind)
            group = []
        if f.kind in (CSTR, TIME):
            _emit_cstr(body, f, var, ind)
        elif f.kind == SM:
            body += [
                f"{ind}e = pos + sm_length",
                f"{ind}if e > end:",
                f"{ind}    raise error('sm_length runs past the end of the PDU', "
                f"{_RINVMSGLEN}, seq, CID)",
                f"{ind}{var} = data[pos:e]",
                f"{ind}pos = e",
            ]
        elif f.kind in (DESTS, UNSUCC):
            body.append(f"{ind}{var}, pos = {f.kind}(data, pos, end, seq, CID)")
        elif f.kind == TLVS:
            has_tlvs = True
            body.append(f"{ind}{var} = NO_TLVS if pos == end else tlvs(data, pos, seq, CID)")
        else:  # pragma: no cover - a typo in a layout
            raise AssertionError(f.kind)
    if group:
        _emit_bytes(body, group, ind)
    if body:
        # Fixed-size fields are read without bounds checks: in CPython 3.11 a try block costs
        # nothing until it raises, and an IndexError here means the body was cut short.
        lines += ["    try:", *body, "    except IndexError:"]
        lines.append(
            f"        raise error('PDU body cut short', {_RINVCMDLEN}, seq, CID) from None"
        )
    if not has_tlvs:
        lines += [
            "    if pos != end:",
            f"        raise error('octets after the last field', {_RINVCMDLEN}, seq, CID)",
        ]
    return "\n".join(lines + _build_lines(layout)) + "\n"


def fast_pattern(layout: tuple[Field, ...]) -> bytes | None:
    """A regular expression for the fixed fields of ``layout`` up to sm_length, or None.

    One ``re.match`` in C finds every C-octet string and checks its NUL and maximum length
    (§3.1), where Python code would take a find, a test and a slice per field.
    """
    if any(f.kind in (DESTS, UNSUCC) for f in layout):
        return None
    if not any(f.kind in (CSTR, TIME) for f in layout):
        return None
    parts: list[bytes] = []
    run = 0
    for f in layout:
        if f.kind in (U8, SM):
            run += 1  # SM: its sm_length octet
            continue
        if run:
            parts.append(b"(.{%d})" % run)
            run = 0
        if f.kind == CSTR:
            parts.append(b"([^\0]{0,%d})\0" % (f.size - 1))
        elif f.kind == TIME:
            parts.append(b"((?:[^\0]{16})?)\0")  # §7.1: 16 characters or NULL
    if run:
        parts.append(b"(.{%d})" % run)
    return b"".join(parts)


def _fast_source(layout: tuple[Field, ...], lenient_empty: bool | str) -> str | None:
    """``decode(data, seq, status)``: the common case in the fewest steps, or None.

    The fixed fields come from one match of :func:`fast_pattern` (``RX``); each group of
    1-octet fields is unpacked from its bytes. Anything unusual -- no match, a failed range
    check, sm_length past the end -- hands over to the careful decoder, which raises the
    precise error; so both accept exactly the same PDUs.
    """
    if fast_pattern(layout) is None:
        return None
    lines = ["def decode(data, seq, status):", "    end = len(data)"]
    lines += _lenient_lines(lenient_empty)
    lines += [
        "    m = RX.match(data, 16)",
        "    if m is None:",
        "        return careful(data, seq, status)",
    ]
    groups: list[str] = []  # the variable each regex group goes to
    unpack: list[str] = []  # "a, b = g1" lines
    strings: list[str] = []
    checks: list[str] = []
    run: list[str] = []
    tail: list[str] = []
    has_sm = has_tlvs = False

    def flush() -> None:
        if run:
            g = f"g{len(groups)}"
            groups.append(g)
            unpack.append(f"    {', '.join(run)}{',' if len(run) == 1 else ''} = {g}")
            run.clear()

    for f in layout:
        var = f"f_{f.name}"
        if f.kind == U8:
            run.append(var)
            if f.maximum < 255:
                checks.append(f"{var} > {f.maximum}")
        elif f.kind == SM:
            run.append("sm_length")
            has_sm = True
            checks.append(f"e > end or sm_length > {MAX_SM_LENGTH}")
            tail += [f"    {var} = data[pos:e]", "    pos = e"]
        elif f.kind in (CSTR, TIME):
            flush()
            groups.append(var)
            strings.append(var)
        else:
            has_tlvs = True
            tail.append(f"    {var} = NO_TLVS if pos == end else tlvs(data, pos, seq, CID)")
    flush()
    lines.append(f"    {', '.join(groups)}{',' if len(groups) == 1 else ''} = m.groups()")
    lines += unpack
    lines.append("    pos = m.end()")
    if has_sm:
        lines.append("    e = pos + sm_length")
    if not has_tlvs:
        checks.append("pos != end" if not has_sm else "e != end")
    if checks:
        lines += [f"    if {' or '.join(checks)}:", "        return careful(data, seq, status)"]
    lines += tail
    lines += [f"    {v} = {v}.decode('latin-1') if {v} else ''" for v in strings]
    return "\n".join(lines + _build_lines(layout)) + "\n"


def _encoder_source(layout: tuple[Field, ...]) -> tuple[str, bytes | str]:
    """``encode(p, seq)``: one %-format for the body, then the header in front.

    When no octet string sits between C-octet strings (every layout but submit_multi's), the
    fixed fields are formatted as latin-1 text and encoded once: one ``str.encode`` call
    instead of one per C-octet string. ``%c`` of an int is that character, i.e. that octet.
    """
    as_text = not any(f.kind in (DESTS, UNSUCC) for f in layout)
    fmt = ""
    args: list[str] = []
    pre: list[str] = []
    after = ""
    tlvs = False
    for f in layout:
        if f.kind in (CSTR, TIME):
            fmt += "%s\0"
            args.append(f"p.{f.name}" if as_text else f"p.{f.name}.encode('latin-1')")
        elif f.kind == U8:
            fmt += "%c"
            args.append(f"p.{f.name}")
        elif f.kind == SM:
            pre.append(f"    sm = p.{f.name}")
            fmt += "%c"
            args.append("len(sm)")
            if as_text:
                after = " + sm"
            else:
                fmt += "%s"
                args.append("sm")
        elif f.kind in (DESTS, UNSUCC):
            fmt += "%s"
            args.append(f"{f.kind}(p.{f.name})")
        else:
            tlvs = True
    if tlvs:
        # Tlvs keeps its own encoding (see protocols.tlv).
        after += " + p.tlvs._wire"
    lines = ["def encode(p, seq):", *pre]
    if not args:
        lines.append(f"    body = b''{after}")
    elif as_text:
        lines.append(f"    body = (FMT % ({', '.join(args)},)).encode('latin-1'){after}")
    else:
        lines.append(f"    body = FMT % ({', '.join(args)},){after}")
    lines.append("    return pack(16 + len(body), CID, p.command_status, seq) + body")
    return "\n".join(lines) + "\n", fmt if as_text else fmt.encode("latin-1")


def _init_source(layout: tuple[Field, ...], defaults: dict[str, object]) -> str:
    params = ["sequence_number=0", "command_status=0"]
    params += [f"{f.name}={f.name}_default" for f in layout]
    # One short-circuit expression: true as soon as a value cannot be encoded. A wrong type
    # (None, a float, bytes for str) raises TypeError in it, which counts as bad too. The
    # 1-octet fields are OR-ed together and tested once: any bit above 0xFF (or a negative
    # value) survives the OR.
    octets = [f.name for f in layout if f.kind == U8 and f.maximum == 255]
    checks = ["(sequence_number | command_status) & -4294967296"]
    if octets:
        checks.append(f"({' | '.join(octets)}) & -256")
    for f in layout:
        n = f.name
        if f.kind == U8 and f.maximum < 255:
            checks.append(f"not 0 <= {n} <= {f.maximum}")
        elif f.kind == CSTR:
            checks.append(f"len({n}) > {f.size - 1} or '\\0' in {n}")
        elif f.kind == TIME:
            checks.append(f"len({n}) & -17 or '\\0' in {n}")  # length 0 or 16
        elif f.kind == SM:
            checks.append(f"{n}.__class__ is not bytes or len({n}) > {MAX_SM_LENGTH}")
        elif f.kind == TLVS:
            checks.append(f"{n}.__class__ is not Tlvs")
        elif f.kind in (DESTS, UNSUCC):
            checks.append(f"bad_{f.kind}({n})")
    names = ["sequence_number", "command_status", *(f.name for f in layout)]
    lines = [
        f"def __init__(self, *, {', '.join(params)}):",
        "    try:",
        f"        bad = {' or '.join(checks)}",
        "    except TypeError:",
        "        bad = True",
        "    if bad:",
        f"        explain(CLS, {{{', '.join(f'{n!r}: {n}' for n in names)}}})",
        "    if self.__class__ is CLS:",
        "        set_class(self, '__class__', MUT)",
        *(f"        self.{n} = {n}" for n in names),
        "        self.__class__ = CLS",
        "    else:  # a subclass: keep its class, set the slots one by one",
        *(f"        s_{n}(self, {n})" for n in names),
    ]
    return "\n".join(lines) + "\n"


# Fields whose values never go into an error message: errors end up in logs (brief: SMPP
# passwords never appear in logs).
_SECRET_FIELDS: Final = frozenset({"password"})


def explain(cls: type, values: dict[str, object], layout: tuple[Field, ...]) -> None:
    """Slow path of a generated ``__init__``: name the first field that cannot be encoded."""
    for name in ("sequence_number", "command_status"):
        v = values[name]
        if not (isinstance(v, int) and 0 <= v <= 0xFFFFFFFF):
            raise LocalProtocolError(f"{cls.__name__}.{name}={v!r}: not a 4-octet integer")
    for f in layout:
        v = values[f.name]
        shown = "<hidden>" if f.name in _SECRET_FIELDS else repr(v)
        where = f"{cls.__name__}.{f.name}={shown}"
        if f.kind == U8 and not (isinstance(v, int) and 0 <= v <= f.maximum):
            raise LocalProtocolError(f"{where}: not an integer in 0..{f.maximum}")
        if f.kind in (CSTR, TIME):
            if not isinstance(v, str) or "\0" in v:
                raise LocalProtocolError(f"{where}: not a str without NUL")
            if f.kind == CSTR and len(v) > f.size - 1:
                raise LocalProtocolError(f"{where}: longer than {f.size - 1} characters")
            if f.kind == TIME and len(v) not in (0, 16):
                raise LocalProtocolError(f"{where}: a time is empty or 16 characters (§7.1)")
        if f.kind == SM and not (isinstance(v, bytes) and len(v) <= MAX_SM_LENGTH):
            raise LocalProtocolError(f"{where}: not bytes of at most {MAX_SM_LENGTH} octets")
        if f.kind == TLVS and type(v).__name__ != "Tlvs":
            raise LocalProtocolError(f"{where}: not a Tlvs")
        # DESTS / UNSUCC checks raise their own LocalProtocolError from the fast path.
    shown_values = {k: ("<hidden>" if k in _SECRET_FIELDS else v) for k, v in values.items()}
    raise LocalProtocolError(f"{cls.__name__}: invalid field values {shown_values!r}")


def mutable_twin(cls: type) -> type:
    """A subclass of ``cls`` with the same slots but plain attribute assignment.

    Setting 20 slots of a frozen dataclass costs 20 calls through ``object.__setattr__`` or the
    slot descriptors (~75 ns each here). On this twin, ``o.field = v`` is a specialised
    STORE_ATTR (~15 ns) -- both ``__setattr__`` and ``__delattr__`` must be the generic ones,
    as they share one type slot. The layouts are identical, so ``o.__class__ = cls`` afterwards
    is a legal ``__class__`` assignment and ``o`` is an ordinary frozen instance from then on.
    """
    namespace = {
        "__slots__": (),
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
    }
    return type(f"_Mutable{cls.__name__}", (cls,), namespace)


@dataclass(frozen=True, slots=True)
class Generated:
    """The three generated functions of one PDU class."""

    decode: Callable[[bytes, int, int], Any]
    encode: Callable[[Any, int], bytes]
    init: Callable[..., None]


def generate(
    cls: type,
    command_id: int,
    layout: tuple[Field, ...],
    defaults: dict[str, object],
    helpers: dict[str, Any],
    lenient_empty: bool | str,
) -> Generated:
    """Build the decoder, encoder and ``__init__`` of ``cls`` from ``layout``.

    ``lenient_empty`` is True to decode an empty body of a failed response to the defaults,
    ``"always"`` to do so whatever the status. ``helpers`` supplies the submit_multi list
    codecs (``dests_*``, ``unsucc_*``, ``bad_*``), ``tlvs_decode``, ``NO_TLVS`` and ``Tlvs``.
    """
    setters = {
        f"s_{name}": getattr(cls, name).__set__
        for name in ("sequence_number", "command_status", *(f.name for f in layout))
    }
    base = {
        "CLS": cls,
        "MUT": mutable_twin(cls),
        "CID": command_id,
        "new": object.__new__,
        "set_class": object.__setattr__,
        "error": error,
        **setters,
    }
    base["NO_TLVS"] = helpers["NO_TLVS"]

    dec_ns: dict[str, Any] = {
        **base,
        "cstr_error": cstr_error,
        "tlvs": helpers["tlvs_decode"],
        "dests": helpers["dests_decode"],
        "unsucc": helpers["unsucc_decode"],
        "empty": lambda seq, status: cls(sequence_number=seq, command_status=status),
    }
    pattern = fast_pattern(layout)
    if pattern is not None:
        dec_ns["RX"] = re.compile(pattern, re.DOTALL)
    exec(_careful_source(layout, lenient_empty), dec_ns)
    fast = _fast_source(layout, lenient_empty)
    if fast is None:
        decode = dec_ns["careful"]
    else:
        exec(fast, dec_ns)
        decode = dec_ns["decode"]

    src, fmt = _encoder_source(layout)
    enc_ns: dict[str, Any] = {
        **base,
        "FMT": fmt,
        "pack": HEADER.pack,
        "dests": helpers["dests_encode"],
        "unsucc": helpers["unsucc_encode"],
    }
    exec(src, enc_ns)

    init_ns: dict[str, Any] = {
        **base,
        "Tlvs": helpers["Tlvs"],
        "bad_dests": helpers["bad_dests"],
        "bad_unsucc": helpers["bad_unsucc"],
        "explain": lambda c, values: explain(c, values, layout),
        **{f"{name}_default": value for name, value in defaults.items()},
    }
    exec(_init_source(layout, defaults), init_ns)
    init = init_ns["__init__"]
    init.__qualname__ = f"{cls.__name__}.__init__"
    return Generated(decode, enc_ns["encode"], init)
