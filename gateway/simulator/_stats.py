"""Counters of the simulated SMSC, per bind and overall, and the one-line status."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

__all__ = ["BindStats", "SimulatorStats"]


@dataclass(slots=True)
class BindStats:
    """One accepted bind: what it sent and how close it came to the window limit.

    ``max_unanswered`` is the largest number of submit_sm received on this bind whose
    submit_sm_resp had not yet been handed to the socket. It can only under-count the ESME's own
    view (a response we have queued is not yet one it has seen), so a value above the ESME's
    window proves the ESME broke its window.
    """

    connection_id: int
    system_id: str
    mode: str  # "transmitter" | "receiver" | "transceiver"
    submits: int = 0
    accepted: int = 0
    throttled: int = 0
    window_violations: int = 0
    max_unanswered: int = 0
    receipts_sent: int = 0
    mo_sent: int = 0
    open: bool = True


@dataclass(slots=True)
class SimulatorStats:
    """Overall counters; every field is a plain int except the per-state receipt counts."""

    connections: int = 0
    binds: int = 0
    bind_failures: int = 0
    unbinds: int = 0
    submits: int = 0
    accepted: int = 0
    throttled: int = 0
    window_violations: int = 0
    rejected: int = 0  # requests the simulator does not implement (query_sm, ...)
    rejected_pdus: int = 0  # illegal in the bind state; the session answered them
    max_unanswered: int = 0
    receipts_sent: int = 0
    receipts_early: int = 0
    receipts_dropped: int = 0  # no live receiving bind of the account when due
    receipts_requeued: int = 0  # their bind dropped before the deliver_sm_resp
    mo_sent: int = 0
    deliver_sm_resp_ok: int = 0
    deliver_sm_resp_errors: int = 0
    deliver_sm_timeouts: int = 0
    enquire_links_ignored: int = 0  # stop_answering_enquire_link
    enquire_links_sent: int = 0
    peers_dead: int = 0  # our enquire_link went unanswered: connection closed
    unexpected_responses: int = 0
    generic_nacks_sent: int = 0
    protocol_errors: int = 0
    dropped_connections: int = 0  # closed on purpose by drop_after_pdus
    log_records: int = 0
    receipt_states: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        """Every counter by name (for JSON and tests)."""
        out: dict[str, int | dict[str, int]] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, Counter) else int(value)
        return out

    def status_line(self, active_binds: int) -> str:
        """One human line with the counters an operator watches."""
        states = " ".join(f"{k}={v}" for k, v in sorted(self.receipt_states.items()))
        return (
            f"binds={active_binds} bind_failures={self.bind_failures} submits={self.submits}"
            f" accepted={self.accepted} throttled={self.throttled}"
            f" window_violations={self.window_violations} max_unanswered={self.max_unanswered}"
            f" receipts={self.receipts_sent} receipts_dropped={self.receipts_dropped}"
            f" mo={self.mo_sent} nacks={self.generic_nacks_sent}"
            f" drops={self.dropped_connections}" + (f" [{states}]" if states else "")
        )
