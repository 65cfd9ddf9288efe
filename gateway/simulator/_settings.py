"""What the simulated SMSC does: accounts, limits, receipts, faults. Plain frozen data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["RECEIPT_STATES", "MoMessage", "SimulatorSettings", "parse_receipt_mix"]

# SMPP 3.4 §5.2.28 message_state values for the final states the simulator can report, keyed by
# the 7-letter stat: word of the receipt text (Appendix B).
RECEIPT_STATES: Mapping[str, int] = {
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "UNKNOWN": 7,
    "REJECTD": 8,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MoMessage:
    """A mobile-originated message the SMSC delivers to the ESME as deliver_sm after a bind.

    ``system_id`` names the account that gets it; None means the first account that binds a
    receiver or transceiver. Each MO message is delivered once (again only if the bind carrying
    it drops before its deliver_sm_resp).
    """

    source_addr: str
    destination_addr: str
    text: str
    system_id: str | None = None

    @classmethod
    def parse(cls, spec: str) -> MoMessage:
        """Parse ``FROM:TO:TEXT`` (the text may itself contain colons)."""
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise ValueError(f"MO message must be FROM:TO:TEXT, got {spec!r}")
        return cls(source_addr=parts[0], destination_addr=parts[1], text=parts[2])


def _default_accounts() -> Mapping[str, str]:
    return {"ulak": "secret"}


def _default_mix() -> Mapping[str, float]:
    return {"DELIVRD": 1.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorSettings:
    """Every knob of the simulated SMSC.

    Times are in seconds of trio's clock, so tests may run them on ``autojump_clock``.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port, read it back from the handle
    accounts: Mapping[str, str] = field(default_factory=_default_accounts)  # system_id -> pw
    max_binds_per_account: int = 8
    response_delay_s: float = 0.0  # operator round trip, applied to every response we send
    release_spin_s: float = 0.0  # busy-wait this long before a delayed response is due: exact
    # to ~10 µs instead of the kernel's wake-up latency (~0.2 ms on a VM), for a core's CPU
    tps_limit: float | None = None  # per bind; beyond it submit_sm gets ESME_RTHROTTLED
    tps_burst: float | None = None  # token bucket depth; None: a tenth of a second of tps
    max_window: int | None = None  # unanswered submit_sm per bind beyond it: ESME_RMSGQFUL
    receipts: bool = True  # honour registered_delivery (SMPP 3.4 §5.2.17)
    receipt_delay_s: float = 0.0
    receipt_mix: Mapping[str, float] = field(default_factory=_default_mix)
    receipt_id_format: Literal["hex", "decimal"] = "hex"  # message ids are hex in the resp
    early_receipt_fraction: float = 0.0  # receipt sent before the submit_sm_resp
    drop_after_pdus: int | None = None  # close each connection after N PDUs received
    mo_messages: Sequence[MoMessage] = ()
    enquire_link_interval_s: float | None = None  # the SMSC's own enquire_link, when idle
    response_timeout_s: float = 10.0  # for our deliver_sm and enquire_link; then redeliver/close
    deliver_window: int = 100  # deliver_sm (receipts, MO) awaiting deliver_sm_resp per bind
    stop_answering_enquire_link: bool = False  # play a dead peer
    log_path: str | None = None  # JSON lines, one per submit_sm received
    log_flush_interval_s: float = 0.5
    keep_records: bool = True  # the in-memory copy of the log on the handle (tests)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("at least one account is needed")
        if self.max_binds_per_account < 1:
            raise ValueError("max_binds_per_account must be at least 1")
        if self.response_delay_s < 0 or self.receipt_delay_s < 0 or self.release_spin_s < 0:
            raise ValueError("delays must not be negative")
        if self.tps_limit is not None and self.tps_limit <= 0:
            raise ValueError("tps_limit must be positive")
        if self.tps_burst is not None and self.tps_burst < 1:
            raise ValueError("tps_burst must be at least 1")
        if self.max_window is not None and self.max_window < 1:
            raise ValueError("max_window must be at least 1")
        if not 0.0 <= self.early_receipt_fraction <= 1.0:
            raise ValueError("early_receipt_fraction must be within [0, 1]")
        if self.drop_after_pdus is not None and self.drop_after_pdus < 1:
            raise ValueError("drop_after_pdus must be at least 1")
        if self.enquire_link_interval_s is not None and self.enquire_link_interval_s <= 0:
            raise ValueError("enquire_link_interval_s must be positive")
        if self.response_timeout_s <= 0:
            raise ValueError("response_timeout_s must be positive")
        if self.deliver_window < 1:
            raise ValueError("deliver_window must be at least 1")
        if self.log_flush_interval_s <= 0:
            raise ValueError("log_flush_interval_s must be positive")
        if self.receipt_id_format not in ("hex", "decimal"):
            raise ValueError("receipt_id_format must be 'hex' or 'decimal'")
        _check_mix(self.receipt_mix)
        for mo in self.mo_messages:
            if mo.system_id is not None and mo.system_id not in self.accounts:
                raise ValueError(f"MO message for unknown account {mo.system_id!r}")

    @property
    def effective_tps_burst(self) -> float:
        """Depth of the per-bind bucket: small, so a burst cannot hide the rate."""
        if self.tps_limit is None:
            return 0.0
        if self.tps_burst is not None:
            return self.tps_burst
        return max(1.0, self.tps_limit / 10.0)


def _check_mix(mix: Mapping[str, float]) -> None:
    if not mix:
        raise ValueError("receipt_mix must name at least one state")
    for state, weight in mix.items():
        if state not in RECEIPT_STATES:
            known = ", ".join(RECEIPT_STATES)
            raise ValueError(f"unknown receipt state {state!r} (known: {known})")
        if weight < 0:
            raise ValueError(f"receipt_mix weight for {state} must not be negative")
    if sum(mix.values()) <= 0:
        raise ValueError("receipt_mix weights must not all be zero")


def parse_receipt_mix(spec: str) -> dict[str, float]:
    """Parse ``"DELIVRD=0.9,UNDELIV=0.1"`` into a validated mapping (weights, not normalised)."""
    mix: dict[str, float] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        state, sep, weight = item.partition("=")
        if not sep:
            raise ValueError(f"receipt mix item must be STATE=WEIGHT, got {item!r}")
        try:
            mix[state.strip().upper()] = float(weight)
        except ValueError:
            raise ValueError(f"receipt mix weight must be a number, got {weight!r}") from None
    _check_mix(mix)
    return mix
