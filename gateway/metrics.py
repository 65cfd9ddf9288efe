"""Prometheus metrics of the gateway (DESIGN §4: prefix ``ulak_``).

Each :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`, never the
global one, so tests (and several daemons in one process) do not collide.

Hot-path cost: a ``.labels()`` lookup per event doubles the price of an increment (DESIGN §6),
so every labelled child for the known classes, statuses and receipt states is made once here and
kept in a dict keyed by the enum members; the pipeline's calls are a dict lookup and an ``inc``.

Bind metrics are not incremented by the binds at all. The bind supervisor already keeps
cumulative :class:`~gateway.bindstate.BindCounters` per bind, kept across reconnects, so the
daemon hands :meth:`Metrics.update_binds` a :meth:`BindSupervisor.stats` snapshot (per scrape or
on a timer) and a custom collector exposes the last snapshot. Exposing a cumulative count as the
value of a Prometheus counter is exactly the counter contract (monotonic, reset only when the
process restarts, which ``rate()`` detects). The one way it could break is a bind whose counters
start again from zero inside one process (a supervisor rebuilt); the collector notices a value
going down and adds the last value seen to an offset, so the exported series never decreases,
and it keeps exporting the counters of a bind that left the snapshot instead of dropping them.

Labels are route and bind names from the configuration only: no system_id, password or API key
is ever a label value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.binds import SupervisorStats
from gateway.config import MetricsConfig
from protocols.constants import MessageState
from queues.model import MessageClass, Status

if TYPE_CHECKING:
    from gateway.webhooks import WebhookStats  # not at run time: it pulls in httpx

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LATENCY_BUCKETS_S",
    "DEFAULT_RECEIPT_BUCKETS_S",
    "DEFAULT_STORE_BUCKETS_S",
    "METRIC_NAMES",
    "Metrics",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: accept → submit: milliseconds for OTP, up to a minute for a backlog.
DEFAULT_LATENCY_BUCKETS_S: tuple[float, ...] = MetricsConfig().latency_buckets_s
#: submit → receipt: the SMSC's and the handset's time, seconds to an hour.
DEFAULT_RECEIPT_BUCKETS_S: tuple[float, ...] = (
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
#: store commits: a grouped transaction with fsync, tens of microseconds to a second.
DEFAULT_STORE_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

#: Every metric family this module exposes (the names ``config/`` may refer to).
METRIC_NAMES: tuple[str, ...] = (
    "ulak_messages_total",
    "ulak_accept_to_submit_seconds",
    "ulak_submit_to_receipt_seconds",
    "ulak_queue_depth",
    "ulak_deferred_messages",
    "ulak_bind_up",
    "ulak_window_in_flight",
    "ulak_throttled_total",
    "ulak_reconnects_total",
    "ulak_receipts_total",
    "ulak_webhook_failures_total",
    "ulak_store_commit_seconds",
    "ulak_pipeline_events_total",
    "ulak_redis_total",
)

_OTHER = "other"


class Metrics:
    """The gateway's metrics and their registry.

    Args:
        latency_buckets_s: buckets of the accept → submit histogram.
        receipt_buckets_s: buckets of the submit → receipt histogram.
        store_buckets_s: buckets of the store commit histogram.
    """

    def __init__(
        self,
        *,
        latency_buckets_s: Sequence[float] = DEFAULT_LATENCY_BUCKETS_S,
        receipt_buckets_s: Sequence[float] = DEFAULT_RECEIPT_BUCKETS_S,
        store_buckets_s: Sequence[float] = DEFAULT_STORE_BUCKETS_S,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        messages = Counter(
            "ulak_messages_total",
            "Message status transitions, by class and the status entered.",
            ["class", "status"],
            registry=r,
        )
        accept_to_submit = Histogram(
            "ulak_accept_to_submit_seconds",
            "Time from the durable accept to the last part's submit_sm on the wire.",
            ["class"],
            buckets=latency_buckets_s,
            registry=r,
        )
        submit_to_receipt = Histogram(
            "ulak_submit_to_receipt_seconds",
            "Time from submit_sm to the final delivery receipt.",
            ["class"],
            buckets=receipt_buckets_s,
            registry=r,
        )
        queue_depth = Gauge(
            "ulak_queue_depth", "Messages waiting in each class queue.", ["class"], registry=r
        )
        self._deferred = Gauge(
            "ulak_deferred_messages",
            "Messages held until a later time (quiet hours, caps, not_before).",
            registry=r,
        )
        receipts = Counter(
            "ulak_receipts_total",
            "Delivery receipts received, by the state they report.",
            ["status"],
            registry=r,
        )
        self._webhook_failures = Counter(
            "ulak_webhook_failures_total",
            "Webhook events not delivered: given up after the last attempt, or dropped because "
            "the queue was full.",
            registry=r,
        )
        self._store_commit = Histogram(
            "ulak_store_commit_seconds",
            "Duration of one grouped store commit.",
            buckets=store_buckets_s,
            registry=r,
        )
        self._events = Counter(
            "ulak_pipeline_events_total",
            "Pipeline events by kind, e.g. parts_rerouted (moved to a backup route),"
            " receipts_held (early receipts), receipts_answered_unmatched, receipts_expired (held"
            " past early_receipt_hold_s), deliver_store_errors (answered for a retry),"
            " record_retries (status changes the store failed to take, tried again),"
            " duplicate_risk.",
            ["event"],
            registry=r,
        )
        self._events_seen: dict[str, int] = {}
        self._redis = Counter(
            "ulak_redis",
            "The Redis stream ingress by event: entries_accepted, entries_dead (dead-lettered),"
            " entries_failed (left pending: the accept failed), entries_reclaimed (XAUTOCLAIM),"
            " redis_errors (retried), events_published, events_dropped (the events stream"
            " unreachable too long), events_failed.",
            ["event"],
            registry=r,
        )
        self._redis_seen: dict[str, int] = {}
        # Children made once (DESIGN §6); the hot path only indexes these dicts.
        self._messages = {
            (k, s): messages.labels(k.value, s.value) for k in MessageClass for s in Status
        }
        self._accept_to_submit = {k: accept_to_submit.labels(k.value) for k in MessageClass}
        self._submit_to_receipt = {k: submit_to_receipt.labels(k.value) for k in MessageClass}
        self._queue_depth = {k: queue_depth.labels(k.value) for k in MessageClass}
        self._receipts = {s: receipts.labels(s.name.lower()) for s in MessageState}
        self._receipts_other = receipts.labels(_OTHER)
        self._binds = _BindCollector()
        r.register(self._binds)
        self._webhook_failures_seen = 0

    @classmethod
    def from_config(cls, config: MetricsConfig) -> Metrics:
        return cls(latency_buckets_s=config.latency_buckets_s)

    # -- messages -------------------------------------------------------------------------

    def pipeline_events(self, totals: Mapping[str, int]) -> None:
        """Bring ``ulak_pipeline_events_total`` up to the pipeline's running ``totals``."""
        _follow(self._events, self._events_seen, totals)

    def redis_events(self, totals: Mapping[str, int]) -> None:
        """Bring ``ulak_redis_total`` up to the Redis ingress's running ``totals``."""
        _follow(self._redis, self._redis_seen, totals)

    def message_status(self, klass: MessageClass, status: Status, count: int = 1) -> None:
        """Count ``count`` messages of ``klass`` entering ``status``."""
        self._messages[klass, status].inc(count)

    def accept_to_submit(self, klass: MessageClass, seconds: float) -> None:
        self._accept_to_submit[klass].observe(seconds)

    def submit_to_receipt(self, klass: MessageClass, seconds: float) -> None:
        self._submit_to_receipt[klass].observe(seconds)

    def set_queue_depth(self, klass: MessageClass, depth: int) -> None:
        self._queue_depth[klass].set(depth)

    def set_queue_depths(self, depths: Mapping[MessageClass, int]) -> None:
        for klass, depth in depths.items():
            self._queue_depth[klass].set(depth)

    def set_deferred(self, count: int) -> None:
        self._deferred.set(count)

    def receipt(self, state: MessageState | int) -> None:
        """Count a receipt by its reported state (an unlisted value counts as ``other``)."""
        child = self._receipts.get(state) if isinstance(state, MessageState) else None
        if child is None:
            try:
                child = self._receipts[MessageState(state)]
            except ValueError:
                child = self._receipts_other
        child.inc()

    def store_commit(self, seconds: float) -> None:
        self._store_commit.observe(seconds)

    # -- webhooks and binds (from snapshots) ---------------------------------------------------

    def update_webhooks(self, stats: WebhookStats) -> None:
        """Bring ``ulak_webhook_failures_total`` up to the sender's cumulative failed+dropped."""
        total = stats.failed + stats.dropped
        if total > self._webhook_failures_seen:
            self._webhook_failures.inc(total - self._webhook_failures_seen)
        # A smaller total means a new sender started from zero: follow it from there on.
        self._webhook_failures_seen = total

    def update_binds(self, stats: SupervisorStats) -> None:
        """Take a bind supervisor snapshot; the next scrape exposes it."""
        self._binds.update(stats)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (content type :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


@dataclass(slots=True)
class _MonotonicCount:
    """A cumulative count made reset-proof: ``offset`` carries what was seen before a reset."""

    last: int = 0
    offset: int = 0

    def observe(self, value: int) -> None:
        if value < self.last:
            self.offset += self.last
        self.last = value

    @property
    def value(self) -> int:
        return self.offset + self.last


@dataclass(frozen=True, slots=True)
class _BindGauges:
    up: bool
    in_flight: int


# The bind counters exposed as Prometheus counters: (BindCounters field, name, help).
_BIND_COUNTERS: Final = (
    ("throttled", "ulak_throttled_total", "ESME_RTHROTTLED / ESME_RMSGQFUL answers from the SMSC."),
    ("reconnects", "ulak_reconnects_total", "Reconnections of the bind."),
    (
        "delivers_deferred",
        "ulak_delivers_deferred_total",
        "deliver_sm answered ESME_RX_T_APPN without being taken, the store stuck for"
        " deliver_stall_s (the SMSC delivers them again).",
    ),
)


class _BindCollector(Collector):
    """Exposes the last bind snapshot: gauges for the binds in it, counters for every bind
    ever seen."""

    def __init__(self) -> None:
        self._gauges: dict[tuple[str, str], _BindGauges] = {}
        self._counts: dict[str, dict[tuple[str, str], _MonotonicCount]] = {
            field: {} for field, _, _ in _BIND_COUNTERS
        }

    def update(self, stats: SupervisorStats) -> None:
        gauges: dict[tuple[str, str], _BindGauges] = {}
        for bind in stats.binds:
            key = (bind.route, bind.name)
            gauges[key] = _BindGauges(up=bind.up, in_flight=bind.in_flight)
            for field, counts in self._counts.items():
                counts.setdefault(key, _MonotonicCount()).observe(getattr(bind.counters, field))
        self._gauges = gauges

    def describe(self) -> Iterable[Metric]:
        # Names only, so the registry can check collisions without a snapshot.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[Metric]:
        labels = ["route", "bind"]
        up = GaugeMetricFamily("ulak_bind_up", "1 when the bind is bound.", labels=labels)
        in_flight = GaugeMetricFamily(
            "ulak_window_in_flight", "submit_sm awaiting their response.", labels=labels
        )
        for (route, bind), g in self._gauges.items():
            up.add_metric([route, bind], 1.0 if g.up else 0.0)
            in_flight.add_metric([route, bind], float(g.in_flight))
        families: list[Metric] = [up, in_flight]
        for field, name, help_text in _BIND_COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=labels)
            for (route, bind), count in self._counts[field].items():
                family.add_metric([route, bind], float(count.value))
            families.append(family)
        return families


def _follow(counter: Counter, seen: dict[str, int], totals: Mapping[str, int]) -> None:
    """Increment ``counter``'s ``event`` children by what each running total gained."""
    for event, total in totals.items():
        if total > seen.get(event, 0):
            counter.labels(event).inc(total - seen.get(event, 0))
            seen[event] = total
