"""Metrics exposition, bind snapshots as counters, and the ops files in config/.

The YAML files are read with PyYAML when it is installed; the project does not depend on it,
so otherwise a small parser of the block-YAML subset those files use reads them (it raises on
anything outside the subset, which keeps the files plain).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.binds import SupervisorStats
from gateway.bindstate import BindCounters, BindState, BindStatus
from gateway.config import MetricsConfig
from gateway.metrics import METRIC_NAMES, Metrics
from gateway.webhooks import WebhookStats
from protocols.constants import MessageState
from queues.model import MessageClass, Status

CONFIG = Path(__file__).resolve().parent.parent / "config"
HISTOGRAMS = {
    "ulak_accept_to_submit_seconds",
    "ulak_submit_to_receipt_seconds",
    "ulak_store_commit_seconds",
}


def bind_status(
    route: str, name: str, *, up: bool = True, in_flight: int = 0, **counters: int
) -> BindStatus:
    return BindStatus(
        name=name,
        route=route,
        state=BindState.BOUND if up else BindState.DOWN,
        up=up,
        last_failure=None,
        in_flight=in_flight,
        rate=None,
        lowest_rate=None,
        counters=BindCounters(**counters),
    )


def snapshot(*binds: BindStatus) -> SupervisorStats:
    totals = BindCounters()
    for b in binds:
        totals.add(b.counters)
    routes = {b.route: any(x.up for x in binds if x.route == b.route) for b in binds}
    return SupervisorStats(binds=binds, routes_up=routes, totals=totals)


def families(metrics: Metrics) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels``, None if absent."""
    return metrics.registry.get_sample_value(name, labels)


def parsed_sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """As :func:`sample`, but read back from the rendered text exposition."""
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


# -- the exposition -------------------------------------------------------------------------


def test_render_has_every_metric_and_parses() -> None:
    metrics = Metrics()
    metrics.update_binds(snapshot(bind_status("op-a", "op-a#1")))
    text = metrics.render().decode()
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    found = families(metrics)
    for name in METRIC_NAMES:
        family = found[name.removesuffix("_total")]
        expected = (
            "histogram" if name in HISTOGRAMS else "counter" if name.endswith("_total") else "gauge"
        )
        assert family.type == expected, name


def test_pipeline_events_follow_the_pipelines_running_totals() -> None:
    metrics = Metrics()
    metrics.pipeline_events({"parts_rerouted": 2, "receipts_held": 0})
    metrics.pipeline_events({"parts_rerouted": 5, "receipts_held": 1})
    metrics.pipeline_events({"parts_rerouted": 5})  # unchanged: nothing added
    assert sample(metrics, "ulak_pipeline_events_total", event="parts_rerouted") == 5
    assert sample(metrics, "ulak_pipeline_events_total", event="receipts_held") == 1


def test_redis_events_follow_the_ingress_running_totals() -> None:
    metrics = Metrics()
    metrics.redis_events({"entries_accepted": 3, "entries_dead": 1, "events_dropped": 0})
    metrics.redis_events({"entries_accepted": 7, "entries_dead": 1})
    assert sample(metrics, "ulak_redis_total", event="entries_accepted") == 7
    assert sample(metrics, "ulak_redis_total", event="entries_dead") == 1
    # Its own family: the pipeline's events are not touched.
    assert sample(metrics, "ulak_pipeline_events_total", event="entries_accepted") is None


def test_known_children_exist_before_any_event() -> None:
    metrics = Metrics()
    for klass in MessageClass:
        for status in Status:
            labels = {"class": klass.value, "status": status.value}
            assert sample(metrics, "ulak_messages_total", **labels) == 0.0
        assert sample(metrics, "ulak_queue_depth", **{"class": klass.value}) == 0.0
        assert (
            sample(metrics, "ulak_accept_to_submit_seconds_count", **{"class": klass.value}) == 0.0
        )
    for state in MessageState:
        assert sample(metrics, "ulak_receipts_total", status=state.name.lower()) == 0.0


def test_message_counters_gauges_and_histograms_move() -> None:
    metrics = Metrics()
    metrics.message_status(MessageClass.OTP, Status.SUBMITTED)
    metrics.message_status(MessageClass.OTP, Status.SUBMITTED, 4)
    metrics.message_status(MessageClass.MARKETING, Status.DEFERRED)
    metrics.set_queue_depth(MessageClass.MARKETING, 1200)
    metrics.set_queue_depths({MessageClass.OTP: 3, MessageClass.TRANSACTIONAL: 7})
    metrics.set_deferred(42)
    metrics.accept_to_submit(MessageClass.OTP, 0.003)
    metrics.accept_to_submit(MessageClass.OTP, 1.5)
    metrics.submit_to_receipt(MessageClass.TRANSACTIONAL, 90.0)
    metrics.store_commit(0.0004)
    otp = {"class": "otp"}
    assert sample(metrics, "ulak_messages_total", status="submitted", **otp) == 5.0
    assert parsed_sample(metrics, "ulak_messages_total", status="submitted", **otp) == 5.0
    assert sample(metrics, "ulak_messages_total", status="deferred", **{"class": "marketing"})
    assert sample(metrics, "ulak_messages_total", status="delivered", **otp) == 0.0
    assert sample(metrics, "ulak_queue_depth", **{"class": "marketing"}) == 1200.0
    assert sample(metrics, "ulak_queue_depth", **{"class": "transactional"}) == 7.0
    assert sample(metrics, "ulak_deferred_messages") == 42.0
    assert sample(metrics, "ulak_accept_to_submit_seconds_bucket", le="0.005", **otp) == 1.0
    assert sample(metrics, "ulak_accept_to_submit_seconds_bucket", le="2.5", **otp) == 2.0
    assert sample(metrics, "ulak_accept_to_submit_seconds_count", **otp) == 2.0
    assert parsed_sample(metrics, "ulak_accept_to_submit_seconds_bucket", le="0.005", **otp) == 1.0
    assert sample(metrics, "ulak_accept_to_submit_seconds_sum", **otp) == pytest.approx(1.503)
    tx = {"class": "transactional"}
    assert sample(metrics, "ulak_submit_to_receipt_seconds_bucket", le="60.0", **tx) == 0.0
    assert sample(metrics, "ulak_submit_to_receipt_seconds_bucket", le="120.0", **tx) == 1.0
    assert sample(metrics, "ulak_store_commit_seconds_bucket", le="0.0005") == 1.0


def test_receipts_by_state_with_unknown_values_as_other() -> None:
    metrics = Metrics()
    metrics.receipt(MessageState.DELIVERED)
    metrics.receipt(MessageState.DELIVERED)
    metrics.receipt(5)  # UNDELIVERABLE as a plain int (the TLV's value)
    metrics.receipt(99)
    assert sample(metrics, "ulak_receipts_total", status="delivered") == 2.0
    assert sample(metrics, "ulak_receipts_total", status="undeliverable") == 1.0
    assert sample(metrics, "ulak_receipts_total", status="other") == 1.0


def test_buckets_from_config() -> None:
    metrics = Metrics.from_config(MetricsConfig(latency_buckets_s=(0.001, 0.01)))
    metrics.accept_to_submit(MessageClass.OTP, 0.002)
    assert sample(metrics, "ulak_accept_to_submit_seconds_bucket", le="0.01", **{"class": "otp"})
    les = {
        s.labels["le"]
        for s in families(metrics)["ulak_accept_to_submit_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert les == {"0.001", "0.01", "+Inf"}


def test_registries_are_separate() -> None:
    one, two = Metrics(), Metrics()
    one.message_status(MessageClass.OTP, Status.ACCEPTED)
    labels = {"class": "otp", "status": "accepted"}
    assert sample(one, "ulak_messages_total", **labels) == 1.0
    assert sample(two, "ulak_messages_total", **labels) == 0.0


def test_webhook_failures_follow_the_sender() -> None:
    metrics = Metrics()
    metrics.update_webhooks(WebhookStats(delivered=9, retried=4, failed=2, dropped=1, pending=0))
    metrics.update_webhooks(WebhookStats(delivered=9, retried=4, failed=2, dropped=1, pending=0))
    assert sample(metrics, "ulak_webhook_failures_total") == 3.0
    metrics.update_webhooks(WebhookStats(delivered=9, retried=5, failed=3, dropped=1, pending=0))
    assert sample(metrics, "ulak_webhook_failures_total") == 4.0


# -- binds from snapshots ---------------------------------------------------------------------


def test_bind_metrics_from_snapshots() -> None:
    metrics = Metrics()
    a1, a2 = {"route": "op-a", "bind": "op-a#1"}, {"route": "op-a", "bind": "op-a#2"}
    metrics.update_binds(
        snapshot(
            bind_status("op-a", "op-a#1", in_flight=12, throttled=3, reconnects=1),
            bind_status("op-a", "op-a#2", up=False, reconnects=4, delivers_deferred=7),
        )
    )
    assert sample(metrics, "ulak_bind_up", **a1) == 1.0
    assert sample(metrics, "ulak_bind_up", **a2) == 0.0
    assert sample(metrics, "ulak_window_in_flight", **a1) == 12.0
    assert sample(metrics, "ulak_throttled_total", **a1) == 3.0
    assert sample(metrics, "ulak_reconnects_total", **a2) == 4.0
    assert sample(metrics, "ulak_delivers_deferred_total", **a2) == 7.0
    assert sample(metrics, "ulak_delivers_deferred_total", **a1) == 0.0

    metrics.update_binds(
        snapshot(
            bind_status("op-a", "op-a#1", in_flight=2, throttled=8, reconnects=1),
            bind_status("op-a", "op-a#2", reconnects=5, delivers_deferred=9),
        )
    )
    assert sample(metrics, "ulak_bind_up", **a2) == 1.0
    assert sample(metrics, "ulak_window_in_flight", **a1) == 2.0
    assert sample(metrics, "ulak_throttled_total", **a1) == 8.0
    assert parsed_sample(metrics, "ulak_throttled_total", **a1) == 8.0
    assert sample(metrics, "ulak_reconnects_total", **a2) == 5.0
    assert parsed_sample(metrics, "ulak_delivers_deferred_total", **a2) == 9.0


def test_bind_counter_reset_and_departure_keep_counters_monotonic() -> None:
    metrics = Metrics()
    a1 = {"route": "op-a", "bind": "op-a#1"}
    metrics.update_binds(snapshot(bind_status("op-a", "op-a#1", throttled=10)))
    # Counters from zero again (a rebuilt supervisor): the series continues from 10.
    metrics.update_binds(snapshot(bind_status("op-a", "op-a#1", throttled=2)))
    assert sample(metrics, "ulak_throttled_total", **a1) == 12.0
    # The bind leaves the snapshot: its gauges go, its counters stay.
    metrics.update_binds(snapshot(bind_status("op-b", "op-b#1")))
    assert sample(metrics, "ulak_bind_up", **a1) is None
    assert sample(metrics, "ulak_throttled_total", **a1) == 12.0


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=30))
def test_snapshot_counters_never_decrease(values: list[int]) -> None:
    metrics = Metrics()
    exported: list[float] = []
    increase = values[0]
    for i, value in enumerate(values):
        if i:
            # What rate() would add up: the step, or the whole value after a reset.
            increase += value - values[i - 1] if value >= values[i - 1] else value
        metrics.update_binds(snapshot(bind_status("r", "r#1", reconnects=value)))
        got = sample(metrics, "ulak_reconnects_total", route="r", bind="r#1")
        assert got is not None
        exported.append(got)
    assert exported == sorted(exported)
    assert exported[-1] == increase


def test_bind_labels_are_route_and_bind_only() -> None:
    metrics = Metrics()
    metrics.update_binds(snapshot(bind_status("op-a", "op-a#1")))
    for name in ("ulak_bind_up", "ulak_window_in_flight", "ulak_throttled", "ulak_reconnects"):
        for s in families(metrics)[name].samples:
            assert set(s.labels) == {"route", "bind"}


# -- config/: Prometheus, alert rules, Grafana ------------------------------------------------


def _scalar(text: str) -> Any:
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise ValueError(f"unterminated quote: {text}")
        return text[1:-1].replace("''", "'")
    if text.startswith('"'):
        return json.loads(text)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if text[0] in "[]{}&*!|>%@`" or " #" in text:
        raise ValueError(f"outside the supported YAML subset: {text}")
    return text


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        items: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            rest = lines[i][1][2:]
            if ":" not in rest or rest[0] in "'\"":
                items.append(_scalar(rest))
                i += 1
            else:  # "- key: value": a mapping that starts on the dash's line
                lines[i] = (indent + 2, rest)
                item, i = _block(lines, i, indent + 2)
                items.append(item)
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
        key, colon, rest = lines[i][1].partition(":")
        if not colon or key in mapping:
            raise ValueError(f"bad or duplicate key: {lines[i][1]}")
        rest = rest.strip()
        i += 1
        if rest:
            mapping[key] = _scalar(rest)
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _block(lines, i, lines[i][0])
        else:
            mapping[key] = None
    return mapping, i


def _mini_yaml(text: str) -> Any:
    lines = [
        (len(line) - len(line.lstrip(" ")), line.strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ValueError(f"unparsed line: {lines[end][1]}")
    return value


def load_yaml(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if importlib.util.find_spec("yaml") is not None:
        return importlib.import_module("yaml").safe_load(text)
    return _mini_yaml(text)


def test_mini_yaml_reads_the_subset() -> None:
    text = "a:\n  - x: 1\n    y: 'it''s'\n  - \"q\"\nb: plain text\nc:\n  d: true\n"
    assert _mini_yaml(text) == {
        "a": [{"x": 1, "y": "it's"}, "q"],
        "b": "plain text",
        "c": {"d": True},
    }
    with pytest.raises(ValueError):
        _mini_yaml("a: [1, 2]\n")


def referenced_metrics(expr: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bulak_[a-z0-9_]+", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


def known_labels() -> dict[str, set[str]]:
    """Label names of each metric as exposed (histogram ``le`` included)."""
    metrics = Metrics()
    metrics.update_binds(snapshot(bind_status("r", "r#1", throttled=1, reconnects=1)))
    metrics.update_webhooks(WebhookStats(delivered=0, retried=0, failed=1, dropped=0, pending=0))
    metrics.pipeline_events({"record_retries": 1})
    metrics.redis_events({"redis_errors": 1})
    labels: dict[str, set[str]] = {}
    for family in families(metrics).values():
        name = family.name + "_total" if family.type == "counter" else family.name
        labels[name] = {k for s in family.samples for k in s.labels}
    return labels


def check_expr(expr: str) -> set[str]:
    """Every metric in ``expr`` exists, with the labels its selectors and groupings use."""
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    used = referenced_metrics(expr)
    assert used, expr
    assert used <= set(METRIC_NAMES), (expr, used - set(METRIC_NAMES))
    labels = known_labels()
    allowed = set().union(*(labels[m] for m in used))
    for matchers in re.findall(r"ulak_[a-z0-9_]+\{([^}]*)\}", expr):
        for label in re.findall(r"([a-z_]+)\s*=~?", matchers):
            assert label in allowed, (expr, label)
    for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        for label in (g.strip() for g in grouping.split(",")):
            assert label in allowed, (expr, label)
    return used


def test_prometheus_scrape_config() -> None:
    config = load_yaml(CONFIG / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ulak"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert "127.0.0.1:8080" in targets
    for rule_file in config["rule_files"]:
        assert (CONFIG / rule_file).is_file()


def test_alert_rules() -> None:
    config = load_yaml(CONFIG / "alerts.yml")
    rules = {r["alert"]: r for g in config["groups"] for r in g["rules"]}
    assert all(g["name"] for g in config["groups"])
    for rule in rules.values():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        check_expr(rule["expr"])
    assert set(rules) == {
        "UlakBindDown",
        "UlakQueueDepthGrowing",
        "UlakDeliveryRateFalling",
        "UlakOtpLatencyHigh",
        "UlakStoreFailing",
    }
    assert (rules["UlakBindDown"]["expr"], rules["UlakBindDown"]["for"]) == (
        "ulak_bind_up == 0",
        "1m",
    )
    assert rules["UlakQueueDepthGrowing"]["for"] == "10m"
    assert "[10m]" in rules["UlakQueueDepthGrowing"]["expr"]
    rate = rules["UlakDeliveryRateFalling"]["expr"]
    assert 'status="delivered"' in rate and 'status="submitted"' in rate
    assert "[15m]" in rate and rate.endswith("< 0.8")
    otp = rules["UlakOtpLatencyHigh"]
    assert otp["for"] == "5m" and otp["expr"].startswith("histogram_quantile(0.99,")
    assert 'class="otp"' in otp["expr"] and otp["expr"].endswith("> 2")
    store = rules["UlakStoreFailing"]
    assert 'event="record_retries"' in store["expr"] and store["labels"]["severity"] == "critical"


def test_grafana_dashboard() -> None:
    dashboard = json.loads((CONFIG / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        assert panel["title"] and panel["type"] and panel["targets"], panel.get("title")
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids)
        for target in panel["targets"]:
            used |= check_expr(target["expr"])
    assert {
        "ulak_bind_up",
        "ulak_window_in_flight",
        "ulak_messages_total",
        "ulak_queue_depth",
        "ulak_accept_to_submit_seconds",
        "ulak_receipts_total",
        "ulak_throttled_total",
        "ulak_webhook_failures_total",
    } <= used
