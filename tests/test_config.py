from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gateway.config import (
    ConfigError,
    Rate,
    SecretUrl,
    Settings,
    load_config,
    parse_config,
)
from gateway.config._load import _find_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "ulak.example.toml"

EXAMPLE_ENV = {
    "ULAK_OPA_PASSWORD": "pw-a",
    "ULAK_OPB_PASSWORD": "pw-b",
    "ULAK_SHOP_KEY": "shop-api-key-0123456789",
    "ULAK_SHOP_WEBHOOK_SECRET": "shop-webhook-secret-0123",
    "ULAK_OTP_HMAC_KEY": "otp-hmac-key-0123456789abcdef",
}

ROUTE = """
[[routes]]
name = "a"
prefixes = ["+90"]
host = "127.0.0.1"
system_id = "ulak"
password = "secret"
"""

ROUTE_B = """
[[routes]]
name = "b"
prefixes = ["+44"]
host = "127.0.0.1"
system_id = "ulak"
"""


def route(**changes: str) -> str:
    """ROUTE with keys changed or added; values are TOML literals."""
    lines = ROUTE.strip().splitlines()
    for key, value in changes.items():
        found = [i for i, line in enumerate(lines) if line.startswith(f"{key} =")]
        if found:
            lines[found[0]] = f"{key} = {value}"
        else:
            lines.append(f"{key} = {value}")
    return "\n" + "\n".join(lines) + "\n"


def parse(text: str, environ: dict[str, str] | None = None) -> Settings:
    return parse_config(tomllib.loads(text), environ or {}, source="ulak.toml")


def errors(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    return info.value.errors


# -- what loads -----------------------------------------------------------------------------


def test_minimal_config_takes_defaults() -> None:
    settings = parse(ROUTE)
    (route,) = settings.routes
    assert route.name == "a"
    assert route.prefixes == ("+90",)
    assert route.port == 2775
    assert route.bind == "transceiver"
    assert (route.binds, route.window, route.tps) == (1, 10, None)
    assert route.password.get_secret_value() == "secret"
    assert settings.http.listen == "127.0.0.1:8080"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8080)
    assert settings.store.kind == "sqlite"
    assert settings.store.sqlite_path == "/var/lib/ulak/ulak.db"
    assert settings.redis is None
    assert settings.tenants == ()
    assert (settings.otp.ttl_s, settings.otp.length, settings.otp.max_attempts) == (180, 6, 5)
    assert settings.quiet_hours.start == dt.time(21, 0)
    assert settings.quiet_hours.end == dt.time(9, 0)
    assert settings.consent.stop_keywords == ("STOP", "DURDUR", "IPTAL")
    assert settings.limits.marketing_per_recipient is None
    assert settings.log.level == "info"
    assert settings.route("a") is route


def test_design_sample_loads() -> None:
    # DESIGN.md §4, verbatim but for the comments.
    text = """
        [http]
        listen = "127.0.0.1:8080"
        [store]
        url = "sqlite:///var/lib/ulak/ulak.db"
        [redis]
        url = "redis://127.0.0.1:6379/0"
        [[tenants]]
        name = "shop"
        api_key_env = "ULAK_SHOP_KEY"
        require_opt_in = true
        callback_url = "http://127.0.0.1:9000/ulak"
        webhook_secret_env = "ULAK_SHOP_WEBHOOK_SECRET"
        [[routes]]
        name = "operator-a"
        prefixes = ["+90"]
        host = "127.0.0.1"
        port = 2775
        system_id = "ulak"
        password_env = "ULAK_OPA_PASSWORD"
        bind = "transceiver"
        binds = 2
        window = 50
        tps = 500
        segmentation = "udh"
        national_shift = "turkish"
        [quiet_hours]
        start = "21:00"
        end = "09:00"
        [limits]
        marketing_per_recipient = "2/7d"
        [otp]
        ttl_s = 180
        length = 6
        max_attempts = 5
    """
    settings = parse(text, EXAMPLE_ENV)
    assert settings.limits.marketing_per_recipient == Rate(2, 7 * 86400)
    assert settings.routes[0].tps == 500.0
    assert settings.routes[0].password.get_secret_value() == "pw-a"
    assert settings.routes[0].password_env == "ULAK_OPA_PASSWORD"
    key = EXAMPLE_ENV["ULAK_SHOP_KEY"].encode()
    assert settings.tenant("shop").api_key_sha256 == hashlib.sha256(key).hexdigest()
    assert settings.redis is not None and settings.redis.group == "ulak"


def test_example_file_loads_with_the_variables_it_names() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    named = set(re.findall(r'^\s*\w+_env\s*=\s*"(\w+)"', text, flags=re.MULTILINE))
    assert named == set(EXAMPLE_ENV)
    settings = load_config(EXAMPLE, EXAMPLE_ENV)
    assert [route.name for route in settings.routes] == ["operator-a", "operator-b"]
    assert settings.routes[0].backup == "operator-b"
    assert settings.otp.hmac_key is not None
    assert settings.limits.otp_per_prefix == Rate(100, 3600)


def _fields(model: type[BaseModel], section: str = "") -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for name, field in model.model_fields.items():
        out.add((section, name))
        nested = _find_model(field.annotation)
        if nested is not None:
            out |= _fields(nested, f"{section}.{name}" if section else name)
    return out


_HEADER_RE = re.compile(r"\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?")
_KEY_RE = re.compile(r"([A-Za-z0-9_]+)\s*=")
_DYNAMIC_TABLES = frozenset({"otp.templates"})  # keys are data (languages), not settings


def _example_keys() -> tuple[set[tuple[str, str]], list[str]]:
    """Keys written in the example, active or commented out, and those without a comment."""
    keys: set[tuple[str, str]] = set()
    undocumented: list[str] = []
    section = ""
    previous_is_comment = False
    for raw in EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        is_comment = line.startswith("#")
        body = line.lstrip("#").strip()
        header = _HEADER_RE.fullmatch(body)
        key = _KEY_RE.match(body)
        if header is not None:
            section = header[1]
            parent, _, last = section.rpartition(".")
            keys.add((parent, last))
        elif key is not None:
            entry = (section, key[1])
            documented = previous_is_comment or " #" in line or section in _DYNAMIC_TABLES
            if entry not in keys and not documented:
                undocumented.append(f"{section}.{key[1]}")
            keys.add(entry)
        previous_is_comment = is_comment
    return keys, undocumented


def test_example_documents_every_setting() -> None:
    written, _ = _example_keys()
    missing = sorted(f"{s}.{k}" if s else k for s, k in _fields(Settings) - written)
    assert missing == []


def test_example_has_only_known_keys_each_with_a_comment() -> None:
    written, undocumented = _example_keys()
    known = _fields(Settings)
    unknown = sorted(f"{s}.{k}" for s, k in written - known if s not in _DYNAMIC_TABLES)
    assert unknown == []
    assert undocumented == []


# -- errors, each with its path and reason ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routez = 1\n" + ROUTE, "routez: unknown key (did you mean 'routes'?)"),
        ("colour = 1\n" + ROUTE, "colour: unknown key"),
        (ROUTE + ROUTE_B + "windw = 5", "routes[1].windw: unknown key (did you mean 'window'?)"),
        (ROUTE + "[http]\nlistn = 'x:1'", "http.listn: unknown key (did you mean 'listen'?)"),
        # Keys of features Ulak does not have are refused, not silently ignored.
        (ROUTE + "[pipeline]\nqueue_capacity = 10", "pipeline.queue_capacity: unknown key"),
        (ROUTE + "[cluster]\nlease_ttl_s = 15", "cluster.lease_ttl_s: unknown key"),
        # An Idempotency-Key replays its message for good (README): there is no expiry.
        (ROUTE + "[http]\nidempotency_ttl_s = 60", "http.idempotency_ttl_s: unknown key"),
        (ROUTE + 'window = "50"', "routes[0].window: expected an integer, got a string"),
        (ROUTE + "window = 5.5", "routes[0].window: expected an integer, got a float"),
        (ROUTE + "tls = 1", "routes[0].tls: expected a boolean (true or false), got an integer"),
        (ROUTE + "port = true", "routes[0].port: expected an integer, got a boolean"),
        (ROUTE + 'tps = "fast"', "routes[0].tps: expected a number, got a string"),
        (route(system_id="7"), "routes[0].system_id: expected a string, got an integer"),
        (route(prefixes='"+90"'), "routes[0].prefixes: expected an array, got a string"),
        (ROUTE + "window = 0", "routes[0].window: must be at least 1, got 0"),
        (ROUTE + "window = 1001", "routes[0].window: must be at most 1000, got 1001"),
        (ROUTE + "binds = 0", "routes[0].binds: must be at least 1, got 0"),
        (ROUTE + "tps = 0", "routes[0].tps: must be greater than 0, got 0"),
        (
            ROUTE + "reconnect_jitter = 1.5",
            "routes[0].reconnect_jitter: must be at most 1, got 1.5",
        ),
        (
            ROUTE + 'bind = "tranceiver"',
            "routes[0].bind: must be 'transmitter', 'receiver' or 'transceiver', got 'tranceiver'",
        ),
        (
            ROUTE + 'segmentation = "udh8"',
            "routes[0].segmentation: must be 'udh', 'udh16', 'sar' or 'payload', got 'udh8'",
        ),
        (
            ROUTE + 'national_shift = "tr"',
            "routes[0].national_shift: must be 'turkish' or 'none', got 'tr'",
        ),
        (
            route(prefixes='["90"]'),
            "routes[0].prefixes[0]: prefix '90' is not '+' and 1-15 digits (E.164); '' matches all",
        ),
        (
            route(prefixes='["+90", "+90"]'),
            "routes[0].prefixes[1]: prefix '+90' is already routed earlier in this route",
        ),
        (
            ROUTE + ROUTE_B.replace("+44", "+90"),
            "routes[1].prefixes[0]: prefix '+90' is already routed by routes[0]",
        ),
        (
            route(system_id='"a-very-long-system-id"'),
            "routes[0].system_id: must be at most 15 characters (SMPP 3.4)",
        ),
        (route(host='"http://smsc"'), "routes[0].host: must be a host name or an IP address"),
        (
            ROUTE + "addr_ton = 9",
            "routes[0].addr_ton: type of number must be 0-6 (SMPP 3.4 §5.2.5)",
        ),
        (
            ROUTE + "registered_delivery = 3",
            "routes[0].registered_delivery: must be 0-31 with SMSC receipt bits (1-0) other than 3"
            " (§5.2.17)",
        ),
        (
            ROUTE + 'allowed_senders = ["ACME"]\ndefault_sender = "OTHER"',
            "routes[0]: default_sender 'OTHER' is not in allowed_senders",
        ),
        (
            ROUTE + 'default_sender = "ACME-CORPORATION"',
            "routes[0].default_sender: sender 'ACME-CORPORATION' is neither numeric (up to 15"
            " digits) nor alphanumeric (1-11 ASCII letters, digits, spaces or . _ & -, with at"
            " least one letter)",
        ),
        (
            ROUTE + 'default_sender = "+1234567890123456"',
            "routes[0].default_sender: numeric sender '+1234567890123456' has more than 15 digits",
        ),
        (
            ROUTE + "tls_verify = false\ntls_server_hostname = 'x'",
            "routes[0]: tls_server_hostname is set but tls is false",
        ),
        (
            ROUTE + 'bind = "receiver"',
            "routes[0]: a receiver bind cannot submit, so the route must have no prefixes",
        ),
        (
            ROUTE + "inactivity_timeout_s = 20",
            "routes[0]: inactivity_timeout_s must exceed enquire_link_interval_s (or be 0)",
        ),
        (ROUTE + "tps_burst = 5", "routes[0]: tps_burst needs tps"),
        (
            "[http]\nlisten = '127.0.0.1'\n" + ROUTE,
            'http.listen: expected "host:port", like "127.0.0.1:8080"',
        ),
        (
            "[http]\nlisten = ':8080'\n" + ROUTE,
            'http.listen: expected "host:port", like "127.0.0.1:8080"',
        ),
        (
            "[http]\nlisten = 'h:80000'\n" + ROUTE,
            "http.listen: the port must be a number in 0..65535",
        ),
        (
            "[http]\nlisten = 'h:http'\n" + ROUTE,
            "http.listen: the port must be a number in 0..65535",
        ),
        (
            "[http]\nlisten = '::1:8080'\n" + ROUTE,
            'http.listen: an IPv6 address needs brackets, like "[::1]:8080"',
        ),
        (
            "[http]\nlisten = 'bad host:80'\n" + ROUTE,
            "http.listen: must be a host name or an IP address",
        ),
        (
            "[store]\nurl = 'mysql://db/ulak'\n" + ROUTE,
            "store.url: the scheme must be sqlite: or postgresql:// (postgres:// is accepted)",
        ),
        (
            "[store]\nurl = '/var/lib/ulak.db'\n" + ROUTE,
            "store.url: the scheme must be sqlite: or postgresql:// (postgres:// is accepted)",
        ),
        (
            "[store]\nurl = 'sqlite://host/ulak.db'\n" + ROUTE,
            "store.url: a SQLite URL has no host: use sqlite:///absolute/path or"
            " sqlite:relative/path",
        ),
        (
            "[store]\nurl = 'postgresql://db:port/ulak'\n" + ROUTE,
            "store.url: the port in the URL is not a number in 0..65535",
        ),
        (
            "[redis]\nurl = 'http://r'\n" + ROUTE,
            "redis.url: the scheme must be redis://, rediss:// or unix://",
        ),
        (
            "[redis]\nstream = 'x'\n" + ROUTE,
            "redis.url: required key is missing (give url or url_env)",
        ),
        (
            ROUTE.replace('password = "secret"', 'password_env = "ULAK_PW"'),
            "routes[0].password_env: environment variable ULAK_PW is not set",
        ),
        (
            ROUTE + 'password_env = "ULAK_PW"',
            "routes[0].password_env: give password or password_env, not both",
        ),
        (
            route(password='"x"').replace('password = "x"', 'password_env = "1X"'),
            "routes[0].password_env: not a valid environment variable name",
        ),
        (
            ROUTE + ROUTE.replace("+90", "+44"),
            "routes[1].name: duplicate route name 'a' (also routes[0])",
        ),
        (ROUTE + 'backup = "nowhere"', "routes[0].backup: no route is named 'nowhere'"),
        (ROUTE + 'backup = "a"', "routes[0].backup: a route cannot be its own backup"),
        (
            ROUTE + 'backup = "b"' + ROUTE_B + 'backup = "a"',
            "routes[0].backup: backup chain loops: a → b → a",
        ),
        (
            ROUTE + ROUTE_B.replace('["+44"]', "[]"),
            "routes[1].prefixes: empty, and no route names this one as its backup: it would carry"
            " nothing",
        ),
        (
            ROUTE + 'backup = "b"' + ROUTE_B.replace('["+44"]', "[]") + 'bind = "receiver"',
            "routes[0].backup: route 'b' binds as a receiver: it cannot submit",
        ),
        (
            "[routes]\nname = 'a'",
            "routes: expected an array of tables ([[routes]]), got a table ([routes])",
        ),
        ("[http]", "routes: required key is missing"),
        ("routes = []", "routes: at least one [[routes]] table is needed"),
        (
            ROUTE + "[quiet_hours]\nstart = '25:00'",
            'quiet_hours.start: expected "HH:MM" on a 24-hour clock, like "21:00"',
        ),
        (
            ROUTE + "[quiet_hours]\nstart = '9:00'",
            'quiet_hours.start: expected "HH:MM" on a 24-hour clock, like "21:00"',
        ),
        (ROUTE + "[quiet_hours]\nend = 900", "quiet_hours.end: expected a string, got an integer"),
        (ROUTE + "[quiet_hours]\nstart = '09:00'", "quiet_hours: start and end must differ"),
        (
            ROUTE + "[quiet_hours]\ndefault_timezone = 'Mars/Olympus'",
            "quiet_hours.default_timezone: unknown time zone 'Mars/Olympus'"
            " (expected an IANA name)",
        ),
        (
            ROUTE + "[classes]\ntransactional_min_share = 0.6\nmarketing_min_share = 0.4",
            "classes: transactional_min_share + marketing_min_share must be below 1, got 1",
        ),
        (ROUTE + "[otp]\nttl_s = 30", "otp.ttl_s: must be at least 60, got 30"),
        (ROUTE + "[otp]\nlength = 9", "otp.length: must be at most 8, got 9"),
        (ROUTE + "[otp.templates]\nen = 'Your code'", "otp.templates.en: must contain {code}"),
        (
            ROUTE + "[otp.templates]\nen = '{code} {cod}'",
            "otp.templates.en: unknown placeholder {cod} (known: {code}, {minutes})",
        ),
        (
            ROUTE + "[otp.templates]\nde = 'Code {code}'",
            "otp: default_language 'en' has no template",
        ),
        (ROUTE + "[otp]\nhmac_key = 'short'", "otp.hmac_key: must be at least 16 characters"),
        (
            ROUTE + "[consent]\nstop_keywords = []",
            "consent.stop_keywords: at least one keyword is needed",
        ),
        (
            ROUTE + "[consent]\nstop_keywords = ['stop', 'STOP']",
            "consent.stop_keywords: keywords must differ (they are compared in upper case)",
        ),
        (
            ROUTE + "[consent]\nstop_keywords = ['opt out']",
            "consent.stop_keywords[0]: a keyword is one word of 1-32 characters, without spaces",
        ),
        (
            ROUTE + "[log]\nlevel = 'verbose'",
            "log.level: must be 'debug', 'info', 'warning', 'error' or 'critical', got 'verbose'",
        ),
        (
            ROUTE + "[metrics]\nlatency_buckets_s = [1, 0.5]",
            "metrics.latency_buckets_s: must be one or more positive bounds, strictly increasing",
        ),
        (
            ROUTE + "[limits]\nblocked_prefixes = ['']",
            "limits.blocked_prefixes: '' would block every destination",
        ),
    ],
)
def test_error_names_the_key_and_the_reason(text: str, expected: str) -> None:
    assert errors(text) == [f"ulak.toml: {expected}"]


RATE_FORM = 'expected "<count>/<number><unit>" with unit s, m, h or d, like "2/7d"'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"2/7"', RATE_FORM),
        ('"2/d"', RATE_FORM),
        ('"2 / 7d"', RATE_FORM),
        ('"2/7w"', RATE_FORM),
        ('"2/-7d"', RATE_FORM),
        ('"x/7d"', RATE_FORM),
        ('"2.5/7d"', RATE_FORM),
        ('"2/7dd"', RATE_FORM),
        ('""', RATE_FORM),
        ('"0/7d"', "the count before '/' must be at least 1"),
        ('"2/0d"', "the period after '/' must be at least 1"),
        ("2", "expected a string, got an integer"),
    ],
)
def test_bad_rates(value: str, reason: str) -> None:
    text = ROUTE + f"[limits]\nmarketing_per_recipient = {value}"
    assert errors(text) == [f"ulak.toml: limits.marketing_per_recipient: {reason}"]


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("2/7d", Rate(2, 604800)),
        ("100/1s", Rate(100, 1)),
        ("5/1h", Rate(5, 3600)),
        ("3/90m", Rate(3, 5400)),
    ],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate
    assert Rate.parse(str(rate)) == rate


def test_rate_per_second() -> None:
    assert Rate.parse("10/2s").per_second == 5.0
    assert str(Rate.parse("24/1d")) == "24/1d"
    assert str(Rate.parse("60/60s")) == "60/1m"


TENANT = """
[[tenants]]
name = "shop"
api_key_sha256 = "{sha}"
"""
SHA = "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[[tenants]]\nname = 'shop'",
            ["tenants[0].api_key_sha256: required: give api_key_env or api_key_sha256"],
        ),
        (
            TENANT.format(sha="abc"),
            ["tenants[0].api_key_sha256: expected the SHA-256 of the key as 64 hexadecimal digits"],
        ),
        (
            TENANT.format(sha=SHA) + "api_key_env = 'ULAK_KEY'",
            ["tenants[0].api_key_env: give api_key_env or api_key_sha256, not both"],
        ),
        (
            "[[tenants]]\nname = 'shop'\napi_key_env = 'ULAK_NOKEY'",
            ["tenants[0].api_key_env: environment variable ULAK_NOKEY is not set"],
        ),
        (
            "[[tenants]]\nname = 'shop'\napi_key_env = 'ULAK_SHORT'",
            ["tenants[0].api_key_env: the API key in ULAK_SHORT is shorter than 16 characters"],
        ),
        (
            TENANT.format(sha=SHA) * 2,
            [
                "tenants[1].name: duplicate tenant name 'shop' (also tenants[0])",
                "tenants[1].api_key_sha256: same API key as tenants[0]",
            ],
        ),
        (
            TENANT.format(sha=SHA) + TENANT.format(sha=SHA.upper()).replace("shop", "bank"),
            ["tenants[1].api_key_sha256: same API key as tenants[0]"],
        ),
        (
            TENANT.format(sha=SHA) + "callback_url = 'https://example.com/hook'",
            ["tenants[0]: callback_url needs webhook_secret (or webhook_secret_env)"],
        ),
        (
            TENANT.format(sha=SHA) + "callback_url = 'ftp://example.com/'",
            ["tenants[0].callback_url: must be an http:// or https:// URL"],
        ),
        (
            TENANT.format(sha=SHA) + "timezone = 'Istanbul'",
            ["tenants[0].timezone: unknown time zone 'Istanbul' (expected an IANA name)"],
        ),
        (
            TENANT.format(sha=SHA) + "allowed_classes = ['bulk']",
            [
                "tenants[0].allowed_classes[0]: must be 'otp', 'transactional' or 'marketing',"
                " got 'bulk'"
            ],
        ),
        (TENANT.format(sha=SHA) + "rate = '10/s'", [f"tenants[0].rate: {RATE_FORM}"]),
    ],
)
def test_tenant_errors(text: str, expected: list[str]) -> None:
    environ = {"ULAK_KEY": "k" * 20, "ULAK_SHORT": "short"}
    assert errors(ROUTE + text, environ) == [f"ulak.toml: {line}" for line in expected]


def test_missing_secret_variable_is_the_only_error_of_a_required_secret() -> None:
    assert errors(ROUTE + "[redis]\nurl_env = 'ULAK_REDIS'") == [
        "ulak.toml: redis.url_env: environment variable ULAK_REDIS is not set"
    ]
    assert errors(ROUTE + "[[tenants]]\nname = 'shop'\napi_key_env = 'no-such name'") == [
        "ulak.toml: tenants[0].api_key_env: not a valid environment variable name"
    ]


def test_models_validate_raw_toml_directly() -> None:
    # Embedders may skip parse_config: arrays are taken as lists too.
    settings = Settings.model_validate(tomllib.loads(ROUTE), context={"environ": {}})
    assert settings.routes[0].prefixes == ("+90",)


def test_tenant_key_from_environment_is_kept_only_as_its_hash() -> None:
    key = "tenant-api-key-0123456789"
    settings = parse(ROUTE + "[[tenants]]\nname = 'shop'\napi_key_env = 'K'", {"K": key})
    tenant = settings.tenants[0]
    assert tenant.api_key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert key not in repr(settings) and key not in settings.model_dump_json()
    assert tenant.require_opt_in is True


def test_sha256_is_normalised_to_lower_case() -> None:
    settings = parse(ROUTE + TENANT.format(sha="AB" * 32))
    assert settings.tenants[0].api_key_sha256 == "ab" * 32


def test_every_error_is_reported_at_once() -> None:
    text = (
        "mystery = true\n"
        "[http]\nlisten = 'nowhere'\n"
        + ROUTE.replace('password = "secret"', 'password_env = "ULAK_MISSING"')
        + "window = 0\n"
        + ROUTE_B
        + "bind = 'both'\nbackup = 'ghost'\n"
        + "[limits]\nmarketing_per_recipient = '2/7w'\n"
    )
    assert errors(text) == [
        'ulak.toml: http.listen: expected "host:port", like "127.0.0.1:8080"',
        "ulak.toml: routes[0].password_env: environment variable ULAK_MISSING is not set",
        "ulak.toml: routes[0].window: must be at least 1, got 0",
        "ulak.toml: routes[1].bind: must be 'transmitter', 'receiver' or 'transceiver', got 'both'",
        f"ulak.toml: limits.marketing_per_recipient: {RATE_FORM}",
        "ulak.toml: mystery: unknown key",
        "ulak.toml: routes[1].backup: no route is named 'ghost'",
    ]


def test_entry_checks_run_even_when_an_entry_is_invalid() -> None:
    # routes[1] fails its own validation; the duplicate name is still reported.
    lines = errors(ROUTE + ROUTE.replace("+90", "+44") + "window = -1")
    assert lines == [
        "ulak.toml: routes[1].window: must be at least 1, got -1",
        "ulak.toml: routes[1].name: duplicate route name 'a' (also routes[0])",
    ]


def test_backup_chain_cycle_is_reported_once() -> None:
    text = (
        ROUTE
        + 'backup = "b"'
        + ROUTE_B
        + 'backup = "c"'
        + ROUTE_B.replace('"b"', '"c"').replace("+44", "+1")
        + 'backup = "b"'
    )
    assert errors(text) == ["ulak.toml: routes[1].backup: backup chain loops: b → c → b"]


def test_backup_only_route_and_chains_load() -> None:
    text = ROUTE + 'backup = "b"' + ROUTE_B.replace('["+44"]', "[]") + 'backup = "c"'
    text += ROUTE_B.replace('"b"', '"c"').replace('["+44"]', '[""]')
    settings = parse(text)
    assert [r.backup for r in settings.routes] == ["b", "c", None]


# -- secrets ---------------------------------------------------------------------------------


SECRETS = {
    "ULAK_PW": "pw-Zq81",
    "ULAK_HOOK": "hook-secret-Zq81-0123",
    "ULAK_HMAC": "hmac-secret-Zq81-0123",
    "ULAK_DB": "postgresql://ulak:db-pass-Zq81@db.internal:5432/ulak",
    "ULAK_KEY": "api-key-Zq81-0123456789",
}


def test_secrets_never_show_in_repr_or_str() -> None:
    text = (
        "[store]\nurl_env = 'ULAK_DB'\n"
        "[redis]\nurl = 'redis://:redis-pass-Zq81@cache:6379/0'\n"
        "[otp]\nhmac_key_env = 'ULAK_HMAC'\n"
        "[[tenants]]\nname = 'shop'\napi_key_env = 'ULAK_KEY'\n"
        "callback_url = 'https://example.com/hook'\nwebhook_secret_env = 'ULAK_HOOK'\n"
        + ROUTE.replace('password = "secret"', 'password_env = "ULAK_PW"')
    )
    settings = parse(text, SECRETS)
    shown = repr(settings) + str(settings) + repr(settings.routes[0]) + str(settings.store.url)
    assert "Zq81" not in shown
    assert str(settings.store.url) == "postgresql://ulak:***@db.internal:5432/ulak"
    assert settings.store.url.get_secret_value() == SECRETS["ULAK_DB"]
    assert settings.store.kind == "postgresql"
    assert settings.routes[0].password.get_secret_value() == SECRETS["ULAK_PW"]
    assert settings.otp.hmac_key is not None
    assert settings.otp.hmac_key.get_secret_value() == SECRETS["ULAK_HMAC"]
    hook = settings.tenants[0].webhook_secret
    assert hook is not None and hook.get_secret_value() == SECRETS["ULAK_HOOK"]
    assert settings.redis is not None
    assert repr(settings.redis.url) == "SecretUrl('redis://:***@cache:6379/0')"


def test_secrets_never_show_in_errors() -> None:
    text = (
        "[store]\nurl = 'mysql://ulak:db-pass-Zq81@db/ulak'\n"
        "[otp]\nhmac_key = 'Zq81'\n"
        + ROUTE.replace('password = "secret"', 'password = "long-pass-Zq81"')
        + ROUTE_B
        + "password_env = 'ULAK_LONG'\n"
    )
    lines = errors(text, {"ULAK_LONG": "long-env-Zq81"})
    assert lines == [
        "ulak.toml: store.url: the scheme must be sqlite: or postgresql://"
        " (postgres:// is accepted)",
        "ulak.toml: routes[0].password: must be at most 8 characters (SMPP 3.4)",
        "ulak.toml: routes[1].password_env: must be at most 8 characters (SMPP 3.4); read from"
        " environment variable ULAK_LONG",
        "ulak.toml: otp.hmac_key: must be at least 16 characters",
    ]
    with pytest.raises(ConfigError) as info:
        parse(text, {"ULAK_LONG": "long-env-Zq81"})
    assert "Zq81" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_empty_environment_variable_is_an_error() -> None:
    text = ROUTE.replace('password = "secret"', 'password_env = "ULAK_PW"')
    assert errors(text, {"ULAK_PW": ""}) == [
        "ulak.toml: routes[0].password_env: environment variable ULAK_PW is empty"
    ]


def test_environment_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULAK_TEST_PW", "from-os")
    data = tomllib.loads(ROUTE.replace('password = "secret"', 'password_env = "ULAK_TEST_PW"'))
    assert parse_config(data).routes[0].password.get_secret_value() == "from-os"


# -- files -----------------------------------------------------------------------------------


def test_invalid_toml_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "ulak.toml"
    path.write_text(ROUTE + "window = = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: line 8, column 10: invalid TOML: Invalid value"]


def test_duplicate_toml_key_is_a_toml_error(tmp_path: Path) -> None:
    path = tmp_path / "ulak.toml"
    path.write_text(ROUTE + 'name = "b"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.errors
    assert line.startswith(f"{path}: line 8, column ")
    assert "invalid TOML" in line


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: cannot read the file: No such file or directory"]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "ulak.toml"
    path.write_bytes(ROUTE.encode() + b"system_type = '\xff'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: line 8: not UTF-8 text (TOML is UTF-8)"]


def test_errors_from_a_file_start_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "ulak.toml"
    path.write_text(ROUTE + "window = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.errors == [f"{path}: routes[0].window: must be at least 1, got 0"]
    assert str(info.value) == info.value.errors[0]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    path = tmp_path / "ulak.toml"
    path.write_text(
        "[store]\nurl = 'sqlite:data/ulak.db'\n" + ROUTE + "tls = true\ntls_ca_file = 'ca.pem'\n",
        encoding="utf-8",
    )
    settings = load_config(path)
    assert settings.routes[0].tls_ca_file == tmp_path / "ca.pem"
    assert settings.store.sqlite_path == str(tmp_path / "data" / "ulak.db")


def test_tls_file_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "ulak.toml"
    path.write_text(ROUTE + "tls = true\ntls_ca_file = 'missing.pem'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    missing = tmp_path / "missing.pem"
    assert info.value.errors == [
        f"{path}: routes[0].tls_ca_file: file '{missing}' does not exist or is not a regular file"
    ]


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("x", encoding="utf-8")
    text = ROUTE + "tls = true\ntls_cert_file = 'client.pem'\n"
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), {}, base_dir=tmp_path)
    assert info.value.errors == [
        "<config>: routes[0]: give tls_cert_file and tls_key_file together (client certificate)"
    ]


# -- values ----------------------------------------------------------------------------------


def test_settings_are_frozen() -> None:
    settings = parse(ROUTE)
    with pytest.raises(ValidationError):
        settings.routes[0].window = 5
    assert isinstance(settings.routes, tuple)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("0.0.0.0:80", "0.0.0.0", 80), ("[::1]:8080", "::1", 8080), ("api.local:0", "api.local", 0)],
)
def test_listen_forms(listen: str, host: str, port: int) -> None:
    settings = parse(f"[http]\nlisten = '{listen}'\n" + ROUTE)
    assert (settings.http.host, settings.http.port) == (host, port)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///var/lib/ulak/ulak.db",
        "sqlite::memory:",
        "postgresql://ulak@db/ulak",
        "postgres://ulak:pw@db:5432/ulak?sslmode=require",
        "postgresql:///ulak",
    ],
)
def test_store_urls_accepted(url: str) -> None:
    assert parse(f"[store]\nurl = '{url}'\n" + ROUTE).store.url.get_secret_value() == url


def test_quiet_hours_accept_toml_times_and_cross_midnight() -> None:
    settings = parse(ROUTE + "[quiet_hours]\nstart = 22:30:00\nend = '07:15'")
    assert (settings.quiet_hours.start, settings.quiet_hours.end) == (
        dt.time(22, 30),
        dt.time(7, 15),
    )
    assert errors(ROUTE + "[quiet_hours]\nstart = 22:30:15")[0].endswith(
        'quiet_hours.start: expected a local time of day in whole minutes, like "21:00"'
    )


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    settings = parse(ROUTE + "tps = 250\nresponse_timeout_s = 5")
    assert settings.routes[0].tps == 250.0
    assert settings.routes[0].response_timeout_s == 5.0


def test_keywords_and_log_level_are_case_insensitive() -> None:
    settings = parse(ROUTE + "[consent]\nstop_keywords = ['stop', 'Dur']\n[log]\nlevel = 'DEBUG'")
    assert settings.consent.stop_keywords == ("STOP", "DUR")
    assert settings.log.level == "debug"


def test_templates_replace_the_defaults() -> None:
    settings = parse(ROUTE + "[otp]\ndefault_language = 'de'\n[otp.templates]\nde = 'Code: {code}'")
    assert dict(settings.otp.templates) == {"de": "Code: {code}"}


def test_route_lookup_by_name() -> None:
    settings = parse(ROUTE + ROUTE_B)
    assert settings.route("b").prefixes == ("+44",)
    with pytest.raises(KeyError):
        settings.route("c")
    with pytest.raises(KeyError):
        settings.tenant("nobody")


def test_secret_url_masks_only_the_password() -> None:
    url = SecretUrl("postgresql://ulak:pw@db:5432/ulak")
    assert str(url) == "postgresql://ulak:***@db:5432/ulak"
    assert SecretUrl("sqlite:///x.db") == SecretUrl("sqlite:///x.db")
    assert str(SecretUrl("redis://cache:6379/0")) == "redis://cache:6379/0"


def _data(settings: Settings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


def test_settings_dump_to_json_without_secrets() -> None:
    settings = parse(ROUTE + "[limits]\nmarketing_per_recipient = '2/7d'")
    dumped = _data(settings)
    assert dumped["limits"]["marketing_per_recipient"] == "2/7d"
    assert dumped["routes"][0]["password"] == "**********"


def test_the_instance_name_is_the_configured_id_else_host_and_pid() -> None:
    assert parse(ROUTE).cluster.name() == f"{socket.gethostname()}-{os.getpid()}"
    assert parse(ROUTE + "[cluster]\ninstance_id = 'ulak-2'").cluster.name() == "ulak-2"
