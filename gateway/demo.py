"""``ulak demo``: the embedded default, end to end, on a fresh machine (DESIGN §4).

It starts the SMSC simulator and ``ulak run`` as subprocesses (SQLite in a temporary folder),
sends a realistic mix through the HTTP API, shows live progress, and prints a summary. The
subprocesses are the real programs, not in-process stand-ins, so the demo exercises exactly
what an operator runs: the config loader, the daemon's start, its signals and its shutdown.

The mix is chosen to show each policy once: OTPs in Turkish and English, transactional order
and shipping notices, a Turkish marketing campaign (some long enough for two parts) of which a
part goes to a country where it is night *now* (deferred by quiet hours, never rejected), and a
recipient who replied DURDUR (the simulator sends that MO at the first bind), so marketing to
them is refused with the reason. The SMSC answers with a 20 ms round trip, a per-bind TPS limit
below the route's (a little throttling), and receipts after a short delay with some UNDELIV.

The consent API (``PUT /v1/consent``) is not used: the demo tenant has ``require_opt_in =
false``, so marketing needs no recorded opt-in, while an opt-out still wins.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx
import phonenumbers
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from gateway.childproc import read_line
from gateway.localconfig import simulator_config

__all__ = ["DemoSummary", "pick_countries", "run_demo"]

SENDER: Final = "ULAK"
QUIET_START: Final = dt.time(21, 0)
QUIET_END: Final = dt.time(9, 0)
# A route like an operator's: a TPS limit the simulator's throttling meets, Turkish shift tables.
_ROUTE_EXTRA: Final = """
tps = 40
national_shift = "turkish"
response_timeout_s = 5
shutdown_grace_s = 3
throttle_hold_s = 0.5
throttle_retry_s = 0.3
"""
DEADLINE_S: Final = 45.0
"""Stop waiting for final statuses after this long (the demo must end within a minute)."""
POLL_INTERVAL_S: Final = 0.4
POLL_CONCURRENCY: Final = 16

# (region, zone): countries whose mobile numbers map to exactly one zone, spread around the
# clock so that at any UTC time one of them is in quiet hours and another is not.
_COUNTRIES: Final = (
    ("TR", "Europe/Istanbul"),
    ("DE", "Europe/Berlin"),
    ("AE", "Asia/Dubai"),
    ("IN", "Asia/Kolkata"),
    ("TH", "Asia/Bangkok"),
    ("JP", "Asia/Tokyo"),
    ("BR", "America/Sao_Paulo"),
    ("US", "America/New_York"),
    ("MX", "America/Mexico_City"),
    ("PE", "America/Lima"),
)


def _in_quiet_hours(local: dt.time) -> bool:
    return local >= QUIET_START or local < QUIET_END


def pick_countries(now: dt.datetime) -> tuple[str, str]:
    """(night region, day region) at ``now`` (aware): the first inside 21:00-09:00 local
    time with an hour's margin before it ends, and the first outside it with an hour's margin
    before it starts (Turkey first, where it fits), so neither flips during the demo."""
    night = day = None
    for region, zone in _COUNTRIES:
        local = now.astimezone(ZoneInfo(zone))
        ahead = (local + dt.timedelta(hours=1)).time()
        if night is None and _in_quiet_hours(local.time()) and _in_quiet_hours(ahead):
            night = region
        if day is None and not _in_quiet_hours(local.time()) and not _in_quiet_hours(ahead):
            day = region
    assert night is not None and day is not None, "the country list must span the clock"
    return night, day


def numbers(region: str, count: int, *, skip: int = 0) -> list[str]:
    """``count`` distinct valid mobile numbers of ``region`` (E.164), from its example number."""
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    base = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    found: list[str] = []
    i = 0
    while len(found) < count:
        candidate = f"{base[:-3]}{(int(base[-3:]) + 7 * (i + skip)) % 1000:03d}"
        i += 1
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            found.append(candidate)
    return found


# --- the message mix ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    to: str
    text: str
    klass: str
    label: str  # what the summary calls the recipient group


def _code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def plan_messages(night: str, day: str) -> tuple[list[Planned], list[Planned]]:
    """(first wave, campaign) for the recipients of the day and night countries."""
    tr = numbers("TR", 24, skip=1)
    foreign = numbers("DE" if day == "TR" else day, 8, skip=2)
    first: list[Planned] = []
    for i, to in enumerate(tr[:8]):
        text = f"Doğrulama kodunuz {_code()}. 3 dakika geçerlidir. Kimseyle paylaşmayın."
        first.append(Planned(to, text, "otp", "otp"))
        if i < 4:
            en = f"Your verification code is {_code()}. It expires in 3 minutes."
            first.append(Planned(foreign[i], en, "otp", "otp"))
    for i, to in enumerate(tr[8:16]):
        order = 40_000 + 137 * i
        if i % 2:
            text = f"Siparişiniz #{order} kargoya verildi. Takip no: YK{order}9. İyi günler!"
        else:
            text = f"Siparişiniz #{order} onaylandı; tahmini teslim {2 + i % 3} iş günü."
        first.append(Planned(to, text, "transactional", "transactional"))
    for i, to in enumerate(foreign[4:8]):
        text = f"Your order #{51_000 + i} has shipped. Track it at https://kargo.example/{i}"
        first.append(Planned(to, text, "transactional", "transactional"))
    short = "Hafta sonuna özel: tüm ayakkabılarda %30 indirim! Kod: YAZ30. Çıkış için DURDUR yazın."
    long = (
        "Değerli müşterimiz, yaz kampanyamız başladı! Şık çantalar, ışıltılı takılar ve "
        "güneş gözlüklerinde %40'a varan indirimler sizi bekliyor. Üstelik 250 TL ve üzeri "
        "alışverişlerde kargo ücretsiz. Çıkış için DURDUR yazın."
    )
    campaign: list[Planned] = []
    day_numbers = tr[16:24] if day == "TR" else numbers(day, 8, skip=5)
    for i, to in enumerate(day_numbers):
        campaign.append(Planned(to, long if i % 2 else short, "marketing", f"day ({day})"))
    for i, to in enumerate(numbers(night, 6, skip=3)):
        campaign.append(Planned(to, long if i % 2 else short, "marketing", f"night ({night})"))
    return first, campaign


# --- the subprocesses -----------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """The first stdout line of ``proc`` containing ``marker``; RuntimeError on timeout/exit."""
    deadline = time.monotonic() + timeout_s
    while (line := read_line(proc, deadline)) is not None:
        if marker in line:
            return line.strip()
    proc.kill()
    raise RuntimeError(f"{proc.args!r} did not print {marker!r} (exit {proc.wait()})")


def _stop(proc: subprocess.Popen[str] | None) -> str:
    """SIGTERM (both programs drain and exit), then SIGKILL after a grace period; return what
    the process still printed (the simulator's last line holds its counters)."""
    if proc is None:
        return ""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _smsc_counters(output: str) -> dict[str, int]:
    """The ``key=value`` integers of the simulator's ``stopping:`` line."""
    counters: dict[str, int] = {}
    for line in output.splitlines():
        if line.startswith("stopping:"):
            for word in line.split():
                key, sep, value = word.strip("[]").partition("=")
                if sep and value.isdigit():
                    counters[key] = int(value)
    return counters


@dataclass(slots=True)
class _Processes:
    simulator: subprocess.Popen[str] | None = None
    daemon: subprocess.Popen[str] | None = None
    smsc_port: int = 0
    url: str = ""
    smsc_counters: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def _processes(folder: Path, api_key: str, opt_out: str) -> Iterator[_Processes]:
    procs = _Processes()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        procs.simulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.simulator",
                "--port",
                "0",
                "--account",
                "ulak:secret",
                "--rtt-ms",
                "20",
                "--tps",
                "25",
                "--receipt-delay-ms",
                "300",
                "--receipt-mix",
                "DELIVRD=0.85,UNDELIV=0.15",
                "--mo",
                f"{opt_out.lstrip('+')}:{SENDER}:DURDUR",
                "--seed",
                "7",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        line = _read_line(procs.simulator, "listening on", 15)
        procs.smsc_port = int(line.rsplit(":", 1)[1])
        config = simulator_config(
            folder,
            procs.smsc_port,
            tenant="demo",
            api_key=api_key,
            sender=SENDER,
            route="simulator",
            binds=2,
            window=10,
            quiet_hours=(QUIET_START, QUIET_END),
            route_extra=_ROUTE_EXTRA,
        )
        with (folder / "daemon.log").open("w") as log:
            procs.daemon = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        procs.url = _read_line(procs.daemon, "http listening on", 30).rsplit(" ", 1)[1]
        yield procs
    finally:
        _stop(procs.daemon)
        procs.smsc_counters = _smsc_counters(_stop(procs.simulator))


# --- tracking and the summary ---------------------------------------------------------------

_LIVE_COLUMNS: Final = ("sent", "submitted", "delivered", "undeliverable", "deferred", "rejected")


@dataclass(slots=True)
class Tracked:
    planned: Planned
    id: str | None = None
    status: str = "refused"
    encoding: str | None = None
    parts: int = 0
    refusal: str | None = None
    view: dict[str, Any] | None = None


@dataclass(slots=True)
class DemoSummary:
    """What ``--json`` prints: everything the test checks, and what the tables show."""

    night_country: str
    day_country: str
    opted_out: str
    elapsed_s: float = 0.0
    by_class: dict[str, dict[str, int]] = field(default_factory=dict)
    by_group: dict[str, dict[str, int]] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    encodings: dict[str, int] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)
    refused: list[dict[str, str]] = field(default_factory=list)
    smsc: dict[str, int] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(
            {
                "night_country": self.night_country,
                "day_country": self.day_country,
                "opted_out": self.opted_out,
                "elapsed_s": round(self.elapsed_s, 2),
                "by_class": self.by_class,
                "by_group": self.by_group,
                "latency_ms": self.latency_ms,
                "encodings": self.encodings,
                "parts": self.parts,
                "refused": self.refused,
                "smsc": self.smsc,
                "pids": self.pids,
                "ports": self.ports,
            },
            ensure_ascii=False,
        )


def _parse_iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(ordered), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99)}


_FINAL: Final = frozenset({"delivered", "undeliverable", "expired", "rejected", "failed"})


def _latencies(view: dict[str, Any]) -> tuple[float | None, float | None]:
    """(accept→submitted, accept→final) in ms from the history: submitted is when the last
    part's ``submit_sm_resp`` came (DESIGN §2), final the first final message-level status."""
    created = _parse_iso(view["created_at"])
    submitted_at: dict[int | None, float] = {}
    final_at = None
    for event in view["history"]:
        at = _parse_iso(event["at"])
        if event["status"] == "submitted":
            submitted_at[event["part"]] = max(at, submitted_at.get(event["part"], at))
        if event["status"] in _FINAL and event["part"] is None and final_at is None:
            final_at = at
    if view["status"] in _FINAL and final_at is None:
        finals = [_parse_iso(e["at"]) for e in view["history"] if e["status"] in _FINAL]
        final_at = max(finals) if finals else None
    submitted = max(submitted_at.values()) if submitted_at else None
    return (
        None if submitted is None else (submitted - created) * 1000,
        None if final_at is None else (final_at - created) * 1000,
    )


def summarise(tracked: Sequence[Tracked], summary: DemoSummary) -> None:
    by_class: dict[str, Counter[str]] = {}
    by_group: dict[str, Counter[str]] = {}
    to_submit: dict[str, list[float]] = {}
    to_final: dict[str, list[float]] = {}
    encodings: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    for t in tracked:
        klass = t.planned.klass
        by_class.setdefault(klass, Counter())[t.status] += 1
        by_group.setdefault(t.planned.label, Counter())[t.status] += 1
        if t.refusal is not None:
            summary.refused.append({"to": t.planned.to, "class": klass, "reason": t.refusal})
        if t.encoding is not None:
            encodings[t.encoding] += 1
            parts[str(t.parts)] += 1
        if t.view is not None:
            submitted, final = _latencies(t.view)
            if submitted is not None:
                to_submit.setdefault(klass, []).append(submitted)
            if final is not None and t.status in _FINAL:
                to_final.setdefault(klass, []).append(final)
    summary.by_class = {k: dict(v) for k, v in sorted(by_class.items())}
    summary.by_group = {k: dict(v) for k, v in sorted(by_group.items())}
    summary.encodings = dict(encodings)
    summary.parts = dict(parts)
    for klass in sorted(by_class):
        entry: dict[str, dict[str, float]] = {}
        if to_submit.get(klass):
            entry["accept_to_submitted"] = _percentiles(to_submit[klass])
        if to_final.get(klass):
            entry["accept_to_final"] = _percentiles(to_final[klass])
        summary.latency_ms[klass] = entry


def _live_table(tracked: Sequence[Tracked], elapsed: float) -> Table:
    counts: Counter[str] = Counter()
    for t in tracked:
        counts["sent"] += 1
        if t.status in ("submitted", "delivered", "undeliverable"):
            counts["submitted"] += 1
        if t.status in ("rejected", "refused"):
            counts["rejected"] += 1
        else:
            counts[t.status] += 1
    table = Table(title=f"ulak demo — {elapsed:4.1f} s")
    for column in _LIVE_COLUMNS:
        table.add_column(column, justify="right")
    table.add_row(*(str(counts[c]) for c in _LIVE_COLUMNS))
    return table


_SMSC_KEYS: Final = ("submits", "accepted", "throttled", "receipts", "mo")


def _summary_tables(summary: DemoSummary) -> Group:
    statuses = sorted({s for c in summary.by_class.values() for s in c})
    counts = Table(title="messages by class and status")
    counts.add_column("class")
    for status in statuses:
        counts.add_column(status, justify="right")
    for klass, row in summary.by_class.items():
        counts.add_row(klass, *(str(row.get(s, 0)) for s in statuses))
    for group, row in summary.by_group.items():
        if group.startswith(("day", "night")):
            counts.add_row(f"  marketing, {group}", *(str(row.get(s, 0)) for s in statuses))
    latency = Table(title="latency (ms), from the message history")
    for column in ("class", "measure", "n", "p50", "p90", "p99"):
        latency.add_column(column, justify="left" if column in ("class", "measure") else "right")
    for klass, entry in summary.latency_ms.items():
        for measure, p in entry.items():
            latency.add_row(
                klass,
                measure.replace("_", " "),
                *(f"{p[k]:g}" for k in ("n", "p50", "p90", "p99")),
            )
    encodings = Table(title="encodings and parts")
    encodings.add_column("encoding")
    encodings.add_column("messages", justify="right")
    for name, n in sorted(summary.encodings.items()):
        encodings.add_row(name, str(n))
    for n_parts, n in sorted(summary.parts.items()):
        encodings.add_row(f"{n_parts} part(s)", str(n))
    refused = Table(title="refused at accept")
    refused.add_column("to")
    refused.add_column("class")
    refused.add_column("reason")
    for r in summary.refused:
        refused.add_row(r["to"], r["class"], r["reason"])
    smsc = Table(title="the SMSC simulator saw")
    for key in _SMSC_KEYS:
        smsc.add_column(key, justify="right")
    smsc.add_row(*(str(summary.smsc.get(k, "?")) for k in _SMSC_KEYS))
    return Group(counts, latency, encodings, refused, smsc)


# --- the run --------------------------------------------------------------------------------


async def _send(
    client: httpx.AsyncClient, first: list[Planned], campaign: list[Planned]
) -> list[Tracked]:
    """OTP and transactional one request each (what an app does), the campaign as a batch."""
    tracked: list[Tracked] = []

    def take(t: Tracked, answer: dict[str, Any]) -> None:
        if "id" in answer:
            t.id = answer["id"]
            t.status = answer["status"]
            t.encoding = answer["encoding"]
            t.parts = answer["parts"]
        else:
            error = answer.get("error", answer)
            t.refusal = f"{error.get('code', '?')}: {error.get('detail', '?')}"

    for p in first:
        t = Tracked(p)
        body = {"to": p.to, "text": p.text, "class": p.klass, "from": SENDER}
        response = await client.post(
            "/v1/messages", json=body, headers={"Idempotency-Key": secrets.token_hex(8)}
        )
        take(t, response.json())
        tracked.append(t)
    bodies = [{"to": p.to, "text": p.text, "class": p.klass, "from": SENDER} for p in campaign]
    response = await client.post("/v1/messages/batch", json={"messages": bodies})
    for p, answer in zip(campaign, response.json()["results"], strict=True):
        t = Tracked(p)
        take(t, answer)
        tracked.append(t)
    return tracked


async def _poll(client: httpx.AsyncClient, tracked: Sequence[Tracked]) -> None:
    """One round: GET every message not final yet, at most POLL_CONCURRENCY at a time."""
    limiter = trio.CapacityLimiter(POLL_CONCURRENCY)

    async def one(t: Tracked) -> None:
        async with limiter:
            response = await client.get(f"/v1/messages/{t.id}")
        if response.status_code == 200:
            t.view = response.json()
            t.status = t.view["status"]

    async with trio.open_nursery() as nursery:
        for t in tracked:
            if t.id is not None and t.status not in _FINAL:
                nursery.start_soon(one, t)


async def _wait_ready(client: httpx.AsyncClient, timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while (await client.get("/readyz")).status_code != 200:
            await trio.sleep(0.05)


async def _drive(
    url: str, api_key: str, summary: DemoSummary, console: Console, started: float
) -> None:
    night, day = summary.night_country, summary.day_country
    first, campaign = plan_messages(night, day)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        await _wait_ready(client, 20)
        # The simulator sends the DURDUR MO at the first bind; give the daemon a moment to
        # record the opt-out before the campaign reaches that number.
        await trio.sleep(0.5)
        stop = Planned(
            summary.opted_out,
            "Son gün! Tüm ürünlerde %50 indirim. Çıkış için DURDUR yazın.",
            "marketing",
            "opted out",
        )
        tracked = await _send(client, first, [*campaign, stop])
        with Live(
            _live_table(tracked, 0), console=console, auto_refresh=False, transient=False
        ) as live:
            while time.monotonic() - started < DEADLINE_S:
                await _poll(client, tracked)
                live.update(_live_table(tracked, time.monotonic() - started), refresh=True)
                if all(t.status in _FINAL or t.status in ("deferred", "refused") for t in tracked):
                    break
                await trio.sleep(POLL_INTERVAL_S)
        console.print()
        # One last look at the deferred ones, for their history.
        for t in tracked:
            if t.status == "deferred":
                t.status = "queued"  # make _poll fetch it once more
        await _poll(client, tracked)
    summarise(tracked, summary)


def run_demo(*, as_json: bool = False, console: Console | None = None) -> int:
    """Run the demo; return the exit code (0, or 1 when a subprocess failed to start)."""
    console = console if console is not None else Console()
    started = time.monotonic()
    night, day = pick_countries(dt.datetime.now(dt.UTC))
    opt_out = numbers("TR", 1, skip=90)[0]
    summary = DemoSummary(night_country=night, day_country=day, opted_out=opt_out)
    api_key = secrets.token_urlsafe(24)
    folder = Path(tempfile.mkdtemp(prefix="ulak-demo-"))
    try:
        console.print(
            f"[bold]ulak demo[/]: night in {night} (marketing there waits for 09:00), "
            f"day in {day}; {opt_out} replies DURDUR. Temporary folder {folder}"
        )
        with _processes(folder, api_key, opt_out) as procs:
            assert procs.simulator is not None and procs.daemon is not None
            summary.pids = [procs.simulator.pid, procs.daemon.pid]
            summary.ports = [procs.smsc_port, int(procs.url.rsplit(":", 1)[1])]
            console.print(f"SMSC simulator on port {procs.smsc_port}, daemon at {procs.url}")
            trio.run(_drive, procs.url, api_key, summary, console, started)
        summary.smsc = procs.smsc_counters
    except (RuntimeError, httpx.HTTPError, trio.TooSlowError) as exc:
        console.print(f"[red]ulak demo failed: {exc!r}[/]")
        return 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary.elapsed_s = time.monotonic() - started
    console.print(_summary_tables(summary))
    console.print(f"done in {summary.elapsed_s:.1f} s; simulator and daemon stopped.")
    if as_json:
        print(summary.as_json(), flush=True)
    return 0
