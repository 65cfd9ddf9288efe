"""From a send request to what the store keeps and what the binds send.

:func:`compose` validates one request (number, text, class, sender, validity) against its tenant
and the route that will carry it, and encodes the text once: the parts and encoding go back to
the caller in the accept answer and into the store. :func:`queued_parts` cuts the encoded text
into compact :class:`~queues.classqueue.QueuedPart` entries (a million of them must fit in a
gigabyte), and :class:`PduBuilder` turns an entry into its ``submit_sm`` only when a bind takes it.

A part's payload is a tuple ``(destination, sender, user_data, flags, tenant)``: the
destination without ``+``, the sender and tenant (interned: there are few), the short_message
(or message_payload) octets and one int that packs data_coding, UDHI, the payload flag, the
message's part count and the SAR values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, cast

import phonenumbers

from gateway.config import RouteConfig, TenantConfig
from gateway.msisdn import is_valid_national, may_strip_national_prefix
from protocols.constants import EsmClass
from protocols.encoding import EncodedText, choose_encoding
from protocols.frozen import fast_init
from protocols.gsm import LocalEncodingError
from protocols.pdu import SubmitSm
from protocols.segmentation import segment
from protocols.tlv import NO_TLVS, Tlvs
from queues.classqueue import QueuedPart
from queues.model import MessageClass, NewMessage, Status

__all__ = [
    "ComposeError",
    "Composed",
    "MessageRequest",
    "PartPayload",
    "PduBuilder",
    "compose",
    "id_accepted_at",
    "id_class",
    "new_message_id",
    "normalise_msisdn",
    "part_count",
    "part_msisdn",
    "part_sender",
    "part_tenant",
    "payload_of",
    "queued_parts",
]

_UDHI = 1 << 8
_PAYLOAD = 1 << 9
_PARTS_SHIFT = 10  # the message's part count, 8 bits
_SAR_SHIFT = 18  # then ref (16 bits), total (8), seqnum (8)


class PartPayload(NamedTuple):
    """What a queued part carries to build its submit_sm (a plain tuple in memory)."""

    destination: str
    sender: str
    data: bytes
    flags: int
    tenant: str


def payload_of(part: QueuedPart) -> PartPayload:
    return cast(PartPayload, part.payload)


class ComposeError(ValueError):
    """A request that cannot be sent as asked: ``field`` names the culprit, ``detail`` says why."""

    def __init__(
        self, field: str, detail: str, code: str = "invalid", until: float | None = None
    ) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail
        self.code = code
        self.until = until  # a refusal that passes with time: when (epoch seconds), if known


@fast_init
@dataclass(frozen=True, slots=True)
class MessageRequest:
    """One message as a client asks for it (the body of ``POST /v1/messages``)."""

    to: str
    text: str
    klass: MessageClass
    sender: str | None = None
    reference: str | None = None
    not_before: float | None = None
    valid_for_s: int | None = None
    callback_url: str | None = None

    def fingerprint(self) -> str:
        """A hash of the request body: one idempotency key with two bodies is a conflict.

        The hash of ``json.dumps(body, sort_keys=True)`` with the body's API field names, as
        stored by earlier versions (so a replay across an upgrade still matches); the JSON
        is written out here in that order, three times faster than ``json.dumps``, and a
        property test holds the two to the same text.
        """
        text = (
            f'{{"callback_url": {_json(self.callback_url)}, "class": {_ascii(self.klass.value)},'
            f' "from": {_json(self.sender)}, "not_before": {_json(self.not_before)},'
            f' "reference": {_json(self.reference)}, "text": {_ascii(self.text)},'
            f' "to": {_ascii(self.to)}, "valid_for_s": {_json(self.valid_for_s)}}}'
        )
        return hashlib.sha256(text.encode()).hexdigest()


_ascii = json.encoder.encode_basestring_ascii


def _json(value: object) -> str:
    """``json.dumps(value)`` for the fields of a request (None and strings written here)."""
    if value is None:
        return "null"
    if type(value) is str:
        return str(_ascii(value))
    return json.dumps(value)


@fast_init
@dataclass(frozen=True, slots=True)
class Composed:
    """A validated, encoded message and the route its encoding was made for."""

    message: NewMessage
    encoded: EncodedText
    route: RouteConfig


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def new_message_id(now: float, klass: MessageClass) -> str:
    """A 32-hex-digit id: 48 bits of milliseconds, the class (one digit), 76 random bits.

    Time first, so the store's indexes grow at their right edge (random ids touch a random
    page of every index on each insert, several times the write work per commit); the random
    part keeps ids unguessable and unique across instances. The accept time and the class can
    be read back (:func:`id_accepted_at`, :func:`id_class`), so the pipeline needs no
    per-message memory to label its metrics.
    """
    millis = int(now * 1000) & 0xFFFF_FFFF_FFFF
    return f"{millis:012x}{klass.priority}{_RANDOM.take(10).hex()[1:]}"


class _RandomPool:
    """Bytes from the operating system's CSPRNG, read 4 KiB at a time: one ``getrandom``
    call serves about 400 ids instead of one each (that call was 8 % of the accept path)."""

    _CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._position = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            end = self._position + n
            if end > len(self._buffer):
                self._buffer, self._position, end = os.urandom(self._CHUNK), 0, n
            chunk = self._buffer[self._position : end]
            self._position = end
            return chunk

    def reset(self) -> None:
        """Drop the buffer (a forked child must not hand out its parent's bytes)."""
        self._lock = threading.Lock()
        self._buffer, self._position = b"", 0


_RANDOM = _RandomPool()
os.register_at_fork(after_in_child=_RANDOM.reset)


def id_accepted_at(message_id: str) -> float:
    """The accept time (epoch seconds, ms precision) a message id was made with."""
    return int(message_id[:12], 16) / 1000.0


def id_class(message_id: str) -> MessageClass:
    """The class a message id was made with."""
    return CLASSES_BY_PRIORITY[int(message_id[12])]


CLASSES_BY_PRIORITY = sorted(MessageClass, key=lambda c: c.priority)


def normalise_msisdn(number: str) -> str:
    """E.164 with ``+`` for a valid number.

    Canonical input (``+`` and digits) is split into country code and national number here
    and only validated (:func:`gateway.msisdn.is_valid_national`): phonenumbers' full
    ``parse`` costs twice the validation, and the API sees canonical numbers almost always.
    Anything else (spaces, dashes, a national prefix written in) takes the full parse.
    Either way the E.164 form is ``+``, the calling code and the national significant
    number, as phonenumbers writes it.

    Raises:
        ComposeError: not a number, or not a valid one.
    """
    raw = number.strip()
    if not raw.startswith("+"):
        raise ComposeError("to", f"{number!r} is not in E.164 form (it must start with +)")
    split = _split_e164(raw[1:], number) if _E164.fullmatch(raw) else None
    if split is None:
        try:
            parsed = phonenumbers.parse(raw, None)
        except phonenumbers.NumberParseException as exc:
            raise ComposeError("to", f"{number!r} is not a phone number: {exc}") from None
        split = parsed.country_code or 0, phonenumbers.national_significant_number(parsed)
    code, national = split
    if not is_valid_national(code, national):
        raise ComposeError("to", f"{number!r} is not a valid number for its country code")
    return f"+{code}{national}"


def _split_e164(digits: str, number: str) -> tuple[int, str] | None:
    """The calling code and national significant number of ``digits`` (E.164 without the
    ``+``), or None where phonenumbers' parse may read a national prefix into the digits
    (:func:`gateway.msisdn.may_strip_national_prefix`): the full parse then decides."""
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]  # 4 digits or more (_E164)
            return None if may_strip_national_prefix(code, national) else (code, national)
    raise ComposeError("to", f"{number!r} has no known country calling code")


def compose(
    request: MessageRequest,
    *,
    tenant: TenantConfig,
    route_for: Callable[[str], RouteConfig],
    now: float,
    default_valid_for_s: int,
    max_valid_for_s: int,
    max_parts: int,
    idempotency_key: str | None = None,
) -> Composed:
    """Validate and encode ``request`` for ``tenant`` on the route ``route_for`` gives for the
    normalised number (its segmentation and national tables decide the encoding).

    Raises:
        ComposeError: the first problem found, with the field it is in.
        gateway.router.NoRouteError: no route takes the number.
    """
    to = normalise_msisdn(request.to)
    route = route_for(to)
    if request.klass not in tenant.allowed_classes:
        raise ComposeError("class", f"tenant {tenant.name} may not send {request.klass.value}")
    sender = _sender(request.sender, tenant, route)
    if not request.text:
        raise ComposeError("text", "must not be empty")
    if "\x00" in request.text:
        # No handset shows it, and neither store keeps it (PostgreSQL text refuses it).
        raise ComposeError("text", "must not contain the NUL character (U+0000)")
    valid_for = default_valid_for_s if request.valid_for_s is None else request.valid_for_s
    if not 60 <= valid_for <= max_valid_for_s:
        raise ComposeError("valid_for_s", f"must be between 60 and {max_valid_for_s} seconds")
    if request.not_before is not None and request.not_before >= now + valid_for:
        raise ComposeError("not_before", "is after the end of the message's validity")
    try:
        encoded = choose_encoding(
            request.text, method=route.segmentation, national_shift=route.national_shift
        )
    except LocalEncodingError as exc:
        raise ComposeError("text", str(exc)) from None
    if encoded.parts > max_parts:
        raise ComposeError(
            "text", f"needs {encoded.parts} SMS parts; at most {max_parts} are allowed", "too_long"
        )
    deferred = request.not_before is not None and request.not_before > now
    message = NewMessage(
        id=new_message_id(now, request.klass),
        tenant=tenant.name,
        klass=request.klass,
        to=to,
        sender=sender,
        text=request.text,
        encoding=encoded.encoding.value,
        parts=encoded.parts,
        created_at=now,
        valid_until=now + valid_for,
        not_before=request.not_before,
        reference=request.reference,
        callback_url=request.callback_url,
        idempotency_key=idempotency_key,
        request_hash=request.fingerprint() if idempotency_key is not None else None,
        status=Status.DEFERRED if deferred else Status.ACCEPTED,
    )
    return Composed(message, encoded, route)


def _sender(asked: str | None, tenant: TenantConfig, route: RouteConfig) -> str:
    sender = asked or tenant.default_sender or route.default_sender
    if sender is None:
        raise ComposeError("from", "no sender given and neither the tenant nor the route has one")
    for owner, allowed in (
        (f"tenant {tenant.name}", tenant.allowed_senders),
        (f"route {route.name}", route.allowed_senders),
    ):
        if allowed and sender not in allowed:
            raise ComposeError("from", f"{sender!r} is not an allowed sender of {owner}")
    return sender


def queued_parts(
    composed: Composed,
    indices: list[int] | None,
    route_name: str,
    reference: int | None,
) -> list[QueuedPart]:
    """The parts to queue (``indices``: only those, e.g. after a restart; None: all)."""
    message = composed.message
    segmented = segment(composed.encoded, reference=reference)
    destination = message.to.removeprefix("+")
    sender = sys.intern(message.sender or "")
    route = sys.intern(route_name)
    tenant = sys.intern(message.tenant)
    out: list[QueuedPart] = []
    for index, seg in enumerate(segmented.segments):
        if indices is not None and index not in indices:
            continue
        flags = segmented.data_coding | (message.parts << _PARTS_SHIFT)
        if seg.udhi:
            flags |= _UDHI
        data = seg.short_message
        if seg.message_payload is not None:
            flags |= _PAYLOAD
            data = seg.message_payload
        if seg.sar_msg_ref_num is not None:
            assert seg.sar_total_segments is not None and seg.sar_segment_seqnum is not None
            sar = (seg.sar_msg_ref_num << 16) | (seg.sar_total_segments << 8)
            flags |= (sar | seg.sar_segment_seqnum) << _SAR_SHIFT
        out.append(
            QueuedPart(
                message_id=message.id,
                index=index,
                klass=message.klass,
                route=route,
                valid_until=message.valid_until,
                payload=PartPayload(destination, sender, data, flags, tenant),
            )
        )
    return out


class PduBuilder:
    """Builds a part's submit_sm with its route's addressing and receipt settings."""

    def __init__(self, routes: Mapping[str, RouteConfig]) -> None:
        self._routes = dict(routes)

    def __call__(self, part: QueuedPart) -> SubmitSm:
        destination, sender, data, flags, _ = payload_of(part)
        route = self._routes[part.route]
        esm = int(EsmClass.UDHI) if flags & _UDHI else 0
        sar = flags >> _SAR_SHIFT
        tlvs = NO_TLVS
        short_message = data
        if flags & _PAYLOAD:
            tlvs = Tlvs(message_payload=data)
            short_message = b""
        elif sar:
            tlvs = Tlvs(
                sar_msg_ref_num=sar >> 16,
                sar_total_segments=(sar >> 8) & 0xFF,
                sar_segment_seqnum=sar & 0xFF,
            )
        source_ton, source_npi = _source_address_type(sender, route)
        return SubmitSm(
            service_type=route.service_type,
            source_addr_ton=source_ton,
            source_addr_npi=source_npi,
            source_addr=sender.removeprefix("+"),
            dest_addr_ton=route.dest_addr_ton,
            dest_addr_npi=route.dest_addr_npi,
            destination_addr=destination,
            esm_class=esm,
            registered_delivery=route.registered_delivery,
            data_coding=flags & 0xFF,
            short_message=short_message,
            tlvs=tlvs,
        )


def part_count(part: QueuedPart) -> int:
    """How many parts the part's message has."""
    return (payload_of(part).flags >> _PARTS_SHIFT) & 0xFF


def part_tenant(part: QueuedPart) -> str:
    return payload_of(part).tenant


def part_msisdn(part: QueuedPart) -> str:
    return "+" + payload_of(part).destination


def part_sender(part: QueuedPart) -> str:
    return payload_of(part).sender


def _source_address_type(sender: str, route: RouteConfig) -> tuple[int, int]:
    """TON/NPI of a sender: alphanumeric (5/0), a short code (3/0) or an international
    number (1/1), unless the route fixes them."""
    if sender.isdigit():
        ton, npi = (1, 1) if len(sender) > 8 else (3, 0)
    elif sender.startswith("+") and sender[1:].isdigit():
        ton, npi = 1, 1
    else:
        ton, npi = 5, 0
    return (
        ton if route.source_addr_ton is None else route.source_addr_ton,
        npi if route.source_addr_npi is None else route.source_addr_npi,
    )


def epoch_to_iso(at: float) -> str:
    """An epoch time as ISO 8601 UTC (for reasons and API answers)."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
