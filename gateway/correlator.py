"""Matching delivery receipts to the parts they report on, in memory.

Every submitted part is remembered under each key of its SMSC message id
(:func:`protocols.receipts.message_id_keys`: hex, decimal and leading zeros all meet), for as
long as a receipt usually takes; older parts are looked up in the store instead. A receipt that
arrives before its ``submit_sm_resp`` (the SMSC raced itself) is **held** and matched the moment
the part is reported submitted; held receipts nobody claims are dropped after ``hold_s``.

No I/O and no clock: times are passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from protocols.receipts import Receipt, message_id_keys

__all__ = ["HeldReceipt", "PartKey", "ReceiptCorrelator"]

PartKey = tuple[str, int]
"""(message id, part index)."""


@dataclass(frozen=True, slots=True)
class HeldReceipt:
    receipt: Receipt
    keys: tuple[str, ...]
    since: float


class ReceiptCorrelator:
    """Remembers recent submissions by SMSC id and holds early receipts."""

    def __init__(self, *, hold_s: float = 600.0, remember_s: float = 3600.0) -> None:
        self._hold_s = hold_s
        self._remember_s = remember_s
        self._parts: OrderedDict[str, tuple[PartKey, float]] = OrderedDict()
        self._held: OrderedDict[str, HeldReceipt] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parts)

    @property
    def held(self) -> int:
        """Early receipts waiting for their submit_sm_resp."""
        return sum(1 for key, entry in self._held.items() if key == entry.keys[0])

    def submitted(
        self, smsc_id: str, part: PartKey, now: float, *, remember: bool = True
    ) -> Receipt | None:
        """Remember ``part`` under ``smsc_id`` (unless not ``remember``: for a part whose
        receipt may never come, which would otherwise stay ``remember_s``); return an early
        receipt held for it, if any."""
        keys = message_id_keys(smsc_id)
        if remember:
            for key in keys:
                self._parts[key] = (part, now)
                self._parts.move_to_end(key)
        found: HeldReceipt | None = None
        for key in keys:
            held = self._held.pop(key, None)
            if held is not None:
                found = held
        if found is None:
            return None
        for key in found.keys:
            self._held.pop(key, None)
        return found.receipt  # the receipt came first; the caller applies it now

    def match(self, receipt: Receipt) -> PartKey | None:
        """The part a receipt reports on, if submitted recently (forgotten once matched by a
        final receipt: the caller calls :meth:`forget`)."""
        keys = message_id_keys(receipt.message_id)
        # Prefer the key in the receipt's own form (first key), as message_id_keys advises.
        for key in keys:
            entry = self._parts.get(key)
            if entry is not None:
                return entry[0]
        return None

    def forget(self, receipt: Receipt) -> None:
        for key in message_id_keys(receipt.message_id):
            self._parts.pop(key, None)

    def hold(self, receipt: Receipt, now: float) -> None:
        """Keep a receipt no part claims yet (its submit_sm_resp may still be on its way)."""
        keys = message_id_keys(receipt.message_id)
        held = HeldReceipt(receipt, keys, now)
        for key in keys:
            self._held[key] = held
            self._held.move_to_end(key)

    def expire(self, now: float) -> list[Receipt]:
        """Drop held receipts older than ``hold_s`` (returned, to count and log) and forget
        submissions older than ``remember_s`` (the store still finds those)."""
        dropped: list[Receipt] = []
        held = self._held
        while held:
            key, entry = next(iter(held.items()))
            if now - entry.since < self._hold_s:
                break
            del held[key]
            if key == entry.keys[0]:
                dropped.append(entry.receipt)
        parts = self._parts
        while parts:
            key, (_, at) = next(iter(parts.items()))
            if now - at < self._remember_s:
                break
            del parts[key]
        return dropped
