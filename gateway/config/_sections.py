"""The sections of the config other than routes: HTTP, store, Redis, tenants and policies."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config._base import (
    EnvVarName,
    Invalid,
    NonNegativeSeconds,
    Seconds,
    SecretText,
    Section,
    environ_of,
    is_env_name,
    reject_invalid,
)
from gateway.config._values import (
    CallbackUrl,
    Clock,
    Language,
    Listen,
    Name,
    Prefix,
    Rate,
    RedisUrl,
    SecretUrl,
    Sender,
    StoreUrl,
    Template,
    TimeZoneName,
    check_default_sender,
)

__all__ = [
    "MIN_SECRET_LENGTH",
    "ClassesConfig",
    "ClusterConfig",
    "ConsentConfig",
    "HttpConfig",
    "LimitsConfig",
    "LogConfig",
    "MessageClass",
    "MetricsConfig",
    "OtpConfig",
    "PipelineConfig",
    "QuietHoursConfig",
    "RedisConfig",
    "StoreConfig",
    "TenantConfig",
    "WebhooksConfig",
]

MIN_SECRET_LENGTH: Final = 16
"""API keys, webhook secrets and the OTP key: shorter ones are guessable."""

_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 token
_KEYWORD_RE: Final = re.compile(r"\S{1,32}")

MessageClass = Literal["otp", "transactional", "marketing"]


def _check_sha256(value: str) -> str:
    if _SHA256_RE.fullmatch(value) is None:
        raise ValueError("expected the SHA-256 of the key as 64 hexadecimal digits")
    return value.lower()


def _check_long_secret(value: Any) -> Any:
    if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
    return value


def _check_header(value: str) -> str:
    if _TOKEN_RE.fullmatch(value) is None:
        raise ValueError("not a valid HTTP header name")
    return value


def _check_keyword(value: str) -> str:
    if _KEYWORD_RE.fullmatch(value) is None:
        raise ValueError("a keyword is one word of 1-32 characters, without spaces")
    return value.upper()


def _check_stream(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("a Redis key must be non-empty and without spaces")
    return value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


Sha256Hex = Annotated[str, BeforeValidator(reject_invalid), AfterValidator(_check_sha256)]
LongSecret = Annotated[SecretText, AfterValidator(_check_long_secret)]
StreamKey = Annotated[str, AfterValidator(_check_stream)]
Keyword = Annotated[str, AfterValidator(_check_keyword)]


class HttpConfig(Section):
    """``[http]``: the JSON API (and, unless ``[metrics] listen`` is set, ``/metrics``)."""

    listen: Listen = "127.0.0.1:8080"
    max_batch: Annotated[int, Field(ge=1, le=1000)] = 1000
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 4 * 1024 * 1024
    docs: bool = True

    @property
    def host(self) -> str:
        """The listen address without the IPv6 brackets."""
        return self.listen.rpartition(":")[0].removeprefix("[").removesuffix("]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StoreConfig(Section):
    """``[store]``: where accepted messages are made durable, and group commit."""

    secret_keys = ("url",)

    url: StoreUrl = SecretUrl("sqlite:///var/lib/ulak/ulak.db")
    """``sqlite:///abs/path``, ``sqlite:rel/path`` (to the config file) or ``postgresql://``."""
    url_env: EnvVarName | None = None
    commit_max_batch: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """At most this many messages per transaction (one fsync)."""
    commit_max_delay_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    """How long the first message of a group waits for others before the commit."""
    pool_size: Annotated[int, Field(ge=1, le=1000)] = 10
    """PostgreSQL connections (SQLite has one writer)."""

    @field_validator("url")
    @classmethod
    def _anchor_sqlite(cls, url: SecretUrl, info: ValidationInfo) -> SecretUrl:
        # A relative SQLite path is relative to the config file, like every path of the file.
        rest = url.get_secret_value().removeprefix("sqlite:")
        if url.scheme != "sqlite" or rest.startswith("/") or rest == ":memory:":
            return url
        context = info.context if isinstance(info.context, dict) else {}
        base = context.get("base_dir")
        path = (Path(base) if base is not None else Path.cwd()) / rest
        return SecretUrl("sqlite://" + str(path.absolute()))

    @property
    def kind(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.url.scheme == "sqlite" else "postgresql"

    @property
    def sqlite_path(self) -> str | None:
        """The database file (or ``:memory:``) of a SQLite store, None for PostgreSQL."""
        if self.kind != "sqlite":
            return None
        rest = self.url.get_secret_value().removeprefix("sqlite:")
        return rest[2:] if rest.startswith("///") else rest


class RedisConfig(Section):
    """``[redis]``: stream ingress and status events; cluster-wide rate-limit buckets."""

    secret_keys = ("url",)

    url: RedisUrl
    url_env: EnvVarName | None = None
    stream: StreamKey = "ulak:messages"
    dead_letter_stream: StreamKey = "ulak:messages:dead"
    events_stream: StreamKey = "ulak:events"
    events_maxlen: Annotated[int, Field(ge=0)] = 1_000_000
    """Trim the events stream to about this many entries; 0 keeps everything."""
    group: StreamKey = "ulak"
    consumer: Name | None = None
    """This instance's consumer name in the group; default: the instance id."""
    read_count: Annotated[int, Field(ge=1, le=100_000)] = 500
    batches_in_flight: Annotated[int, Field(ge=1, le=16)] = 2
    """Batches accepted at once; order is kept within a batch, not across batches."""
    block_ms: Annotated[int, Field(ge=1, le=60_000)] = 1000
    claim_idle_s: Seconds = 60.0
    """Entries left pending this long by a consumer that died are claimed by another."""

    @model_validator(mode="after")
    def _distinct_streams(self) -> RedisConfig:
        streams = (self.stream, self.dead_letter_stream, self.events_stream)
        if len(set(streams)) != len(streams):
            raise ValueError("stream, dead_letter_stream and events_stream must differ")
        return self


class TenantConfig(Section):
    """``[[tenants]]``: one API client; its API key authenticates it."""

    secret_keys = ("webhook_secret",)

    name: Name
    api_key_env: EnvVarName | None = None
    api_key_sha256: Sha256Hex
    """The SHA-256 (hex) of the key; a key read from ``api_key_env`` is kept only as this."""
    require_opt_in: bool = True
    callback_url: CallbackUrl | None = None
    webhook_secret: LongSecret | None = None
    webhook_secret_env: EnvVarName | None = None
    rate: Rate | None = None
    """Overrides ``[limits] per_tenant`` for this tenant."""
    allowed_classes: tuple[MessageClass, ...] = ("otp", "transactional", "marketing")
    allowed_senders: tuple[Sender, ...] = ()
    """Sender addresses this tenant may use; empty: any."""
    default_sender: Sender | None = None
    timezone: TimeZoneName | None = None
    """Quiet hours in this zone for every recipient, instead of the number's own zone."""

    @model_validator(mode="before")
    @classmethod
    def _hash_api_key(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.get("api_key_env")
        if name is None:
            data.setdefault(
                "api_key_sha256",
                Invalid("required: give api_key_env or api_key_sha256"),
            )
            return data
        if "api_key_sha256" in data:
            data["api_key_env"] = Invalid("give api_key_env or api_key_sha256, not both")
            return data
        if not is_env_name(name):
            return data  # field validation says what is wrong with the name
        key = environ_of(info).get(name)
        if key is None:
            data["api_key_env"] = Invalid(f"environment variable {name} is not set")
        elif len(key) < MIN_SECRET_LENGTH:
            data["api_key_env"] = Invalid(
                f"the API key in {name} is shorter than {MIN_SECRET_LENGTH} characters"
            )
        else:
            data["api_key_sha256"] = hashlib.sha256(key.encode()).hexdigest()
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TenantConfig:
        if self.callback_url is not None and self.webhook_secret is None:
            raise ValueError("callback_url needs webhook_secret (or webhook_secret_env)")
        check_default_sender(self.default_sender, self.allowed_senders)
        if not self.allowed_classes:
            raise ValueError("allowed_classes must name at least one class")
        return self


class QuietHoursConfig(Section):
    """``[quiet_hours]``: marketing waits for the window's end in the recipient's local time."""

    enabled: bool = True
    start: Clock = dt.time(21, 0)
    end: Clock = dt.time(9, 0)
    default_timezone: TimeZoneName = "UTC"
    """For numbers whose zone cannot be told."""

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHoursConfig:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class LimitsConfig(Section):
    """``[limits]``: caps that hold messages back; none of them loses a message."""

    marketing_per_recipient: Rate | None = None
    per_tenant: Rate | None = None
    per_sender: Rate | None = None
    per_route: Rate | None = None
    otp_per_number: Rate = Rate(5, 3600)
    otp_resend_cooldown_s: NonNegativeSeconds = 30.0
    otp_per_prefix: Rate | None = None
    otp_prefix_length: Annotated[int, Field(ge=2, le=15)] = 6
    blocked_prefixes: tuple[Prefix, ...] = ()

    @field_validator("blocked_prefixes")
    @classmethod
    def _not_everything(cls, prefixes: tuple[str, ...]) -> tuple[str, ...]:
        if "" in prefixes:
            raise ValueError("'' would block every destination")
        return prefixes


class OtpConfig(Section):
    """``[otp]``: SMS one-time codes (random digits, stored as keyed hashes)."""

    secret_keys = ("hmac_key",)

    ttl_s: Annotated[int, Field(ge=60, le=600)] = 180
    length: Annotated[int, Field(ge=4, le=8)] = 6
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    hmac_key: LongSecret | None = None
    """None: a random key at each start (one instance only; restarts void pending codes)."""
    hmac_key_env: EnvVarName | None = None
    default_language: Language = "en"
    templates: Mapping[Language, Template] = Field(
        default_factory=lambda: {
            "en": "Your code is {code}. It expires in {minutes} minutes.",
            "tr": "Doğrulama kodunuz {code}. {minutes} dakika geçerlidir.",
        }
    )
    totp_issuer: Annotated[str, Field(min_length=1, max_length=64)] = "Ulak"

    @model_validator(mode="after")
    def _consistent(self) -> OtpConfig:
        if self.default_language not in self.templates:
            raise ValueError(f"default_language {self.default_language!r} has no template")
        if ":" in self.totp_issuer:
            raise ValueError("totp_issuer must not contain ':' (it separates the otpauth label)")
        return self


class ClassesConfig(Section):
    """``[classes]``: minimum shares of each bind's capacity that OTP cannot take away."""

    transactional_min_share: Annotated[float, Field(ge=0, le=1)] = 0.10
    marketing_min_share: Annotated[float, Field(ge=0, le=1)] = 0.05

    @model_validator(mode="after")
    def _room_for_otp(self) -> ClassesConfig:
        total = self.transactional_min_share + self.marketing_min_share
        if total >= 1:
            raise ValueError(
                f"transactional_min_share + marketing_min_share must be below 1, got {total:g}"
            )
        return self


def _unique_keywords(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("at least one keyword is needed")
    if len(set(value)) != len(value):
        raise ValueError("keywords must differ (they are compared in upper case)")
    return value


class ConsentConfig(Section):
    """``[consent]``: MO replies that opt a number out of a tenant's marketing."""

    stop_keywords: Annotated[tuple[Keyword, ...], AfterValidator(_unique_keywords)] = (
        "STOP",
        "DURDUR",
        "IPTAL",
    )
    stop_match: Literal["first_word", "exact"] = "first_word"


class WebhooksConfig(Section):
    """``[webhooks]``: delivery of status changes and MO messages to callback URLs."""

    timeout_s: Seconds = 5.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    backoff_initial_s: Seconds = 1.0
    backoff_max_s: Seconds = 600.0
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 16
    queue_size: Annotated[int, Field(ge=1)] = 10_000
    signature_header: Annotated[str, AfterValidator(_check_header)] = "X-Ulak-Signature"

    @model_validator(mode="after")
    def _ordered(self) -> WebhooksConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self


class PipelineConfig(Section):
    """``[pipeline]``: from the store through the class queues to the binds."""

    default_valid_for_s: Annotated[int, Field(ge=60)] = 86_400
    max_valid_for_s: Annotated[int, Field(ge=60)] = 172_800
    max_parts: Annotated[int, Field(ge=1, le=255)] = 10
    fetch_batch: Annotated[int, Field(ge=1, le=100_000)] = 1000
    early_receipt_hold_s: Seconds = 600.0
    early_receipt_wait_s: NonNegativeSeconds = 5.0
    reroute_after_s: NonNegativeSeconds = 10.0
    shutdown_grace_s: NonNegativeSeconds = 10.0

    @model_validator(mode="after")
    def _ordered(self) -> PipelineConfig:
        if self.max_valid_for_s < self.default_valid_for_s:
            raise ValueError("max_valid_for_s must be at least default_valid_for_s")
        return self


class LogConfig(Section):
    """``[log]``."""

    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ] = "info"
    format: Literal["json", "text"] = "text"


def _check_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError("must be a URL path starting with '/'")
    return value


def _check_buckets(value: tuple[float, ...]) -> tuple[float, ...]:
    if not value or any(b <= 0 for b in value) or list(value) != sorted(set(value)):
        raise ValueError("must be one or more positive bounds, strictly increasing")
    return value


class MetricsConfig(Section):
    """``[metrics]``: the Prometheus endpoint."""

    enabled: bool = True
    path: Annotated[str, AfterValidator(_check_path)] = "/metrics"
    """Where ``listen`` serves them (the API's listener serves ``/metrics``, DESIGN §4)."""
    listen: Listen | None = None
    """A separate listener for metrics alone; default: the HTTP API's."""
    latency_buckets_s: Annotated[tuple[float, ...], AfterValidator(_check_buckets)] = (
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
        60.0,
    )


class ClusterConfig(Section):
    """``[cluster]``: several instances on one PostgreSQL (and Redis)."""

    instance_id: Name | None = None
    """Default: ``<hostname>-<pid>`` (:meth:`name`)."""

    def name(self) -> str:
        """This instance's name: ``instance_id``, else ``<hostname>-<pid>``."""
        return self.instance_id or f"{socket.gethostname()}-{os.getpid()}"
