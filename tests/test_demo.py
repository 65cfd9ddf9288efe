"""``ulak demo`` end to end: the real simulator and daemon as subprocesses, the summary it
prints with ``--json``, and nothing left running afterwards."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Literal
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.demo import numbers, pick_countries
from gateway.logs import configure, mask_secrets

FINAL = {"delivered", "undeliverable", "expired", "rejected", "failed"}


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last)
    return result


def test_every_class_is_present(summary: dict[str, Any]) -> None:
    assert set(summary["by_class"]) == {"otp", "transactional", "marketing"}


def test_otps_reach_a_final_status(summary: dict[str, Any]) -> None:
    otp = summary["by_class"]["otp"]
    assert otp and set(otp) <= {"delivered", "undeliverable"}
    assert "accept_to_final" in summary["latency_ms"]["otp"]


def test_marketing_at_night_is_deferred_not_rejected(summary: dict[str, Any]) -> None:
    night = summary["by_group"][f"night ({summary['night_country']})"]
    assert night.get("deferred", 0) > 0
    assert summary["by_class"]["marketing"].get("deferred", 0) > 0
    assert "rejected" not in night and "refused" not in night


def test_the_opted_out_recipient_is_refused_with_the_reason(summary: dict[str, Any]) -> None:
    [refused] = [r for r in summary["refused"] if r["to"] == summary["opted_out"]]
    assert refused["class"] == "marketing"
    assert refused["reason"].startswith("opted_out:")
    assert summary["smsc"]["mo"] == 1


def test_turkish_encodings_and_two_part_messages(summary: dict[str, Any]) -> None:
    encodings = set(summary["encodings"])
    assert encodings & {"gsm7-tr-single", "gsm7-tr-locking", "ucs2"}
    assert summary["parts"].get("2", 0) > 0


def test_nothing_is_left_running(summary: dict[str, Any]) -> None:
    for pid in summary["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in summary["ports"]:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # raises if something still listens


def test_countries_are_picked_by_the_local_hour() -> None:
    # Every half hour of a day: the night country is in 21:00-09:00 local time, the day one not.
    zones = {"TR": "Europe/Istanbul", "DE": "Europe/Berlin", "AE": "Asia/Dubai"}
    zones |= {"IN": "Asia/Kolkata", "TH": "Asia/Bangkok", "JP": "Asia/Tokyo"}
    zones |= {"BR": "America/Sao_Paulo", "US": "America/New_York"}
    zones |= {"MX": "America/Mexico_City", "PE": "America/Lima"}
    start = dt.datetime(2025, 3, 30, tzinfo=dt.UTC)
    for step in range(48):
        now = start + dt.timedelta(minutes=30 * step)
        night, day = pick_countries(now)
        night_hour = now.astimezone(ZoneInfo(zones[night])).time()
        day_hour = now.astimezone(ZoneInfo(zones[day])).time()
        assert night_hour >= dt.time(21) or night_hour < dt.time(8)
        assert dt.time(9) <= day_hour < dt.time(20)


def test_numbers_are_valid_and_distinct() -> None:
    found = numbers("TR", 30)
    assert len(set(found)) == 30
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(n)) for n in found)


# --- gateway.logs (the daemon's log format; kept here, next to the demo that runs the daemon,
# until it gets its own tests/test_logs.py) ---------------------------------------------------


def _log_lines(fmt: Literal["json", "text"], emit: Callable[[logging.Logger], None]) -> list[str]:
    stream = io.StringIO()
    handler = configure("debug", fmt, stream=stream)
    try:
        emit(logging.getLogger("ulak.test"))
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue().splitlines()


def test_json_logs_are_one_object_per_line_with_extra_fields() -> None:
    def emit(log: logging.Logger) -> None:
        log.info("bind %s up", "sim-0", extra={"route": "sim", "window": 10})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed\nover two lines")

    first, second = (json.loads(line) for line in _log_lines("json", emit))
    assert first["level"] == "info" and first["logger"] == "ulak.test"
    assert first["message"] == "bind sim-0 up"
    assert first["route"] == "sim" and first["window"] == 10
    assert first["time"].endswith("Z")
    assert second["level"] == "error" and "ValueError: boom" in second["exc_info"]


def test_secrets_are_masked_in_messages_and_extra_fields() -> None:
    def emit(log: logging.Logger) -> None:
        log.warning("connect password=hunter2 to %s", "postgresql://u:s3cret@db/x")
        log.info("header", extra={"auth": "Authorization: Bearer abc.def-123"})

    lines = _log_lines("json", emit) + _log_lines("text", emit)
    text = "\n".join(lines)
    for secret in ("hunter2", "s3cret", "abc.def-123"):
        assert secret not in text
    assert "password=***" in text and "Bearer ***" in text


@given(st.text(alphabet="abcXYZ0189._-+/!#$%()*=@", min_size=1, max_size=40))
def test_masking_never_leaks_a_password_value(token: str) -> None:
    masked = mask_secrets(f"login password={token} ok")
    assert masked == "login password=*** ok"
