"""``[[routes]]``: one operator account, its binds, and how they behave.

Field names follow :class:`gateway.bind.RouteSettings` (and the SMPP 3.4 field names where
there is one), so building a bind's settings from a route is a plain copy.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from gateway.config._base import (
    EnvVarName,
    NonNegativeSeconds,
    Seconds,
    Section,
    reject_invalid,
)
from gateway.config._values import (
    ExistingFile,
    Host,
    Name,
    Prefix,
    Sender,
    check_default_sender,
)

__all__ = ["RouteConfig"]

# SMPP 3.4 §5.2.5 and §5.2.6: the defined type-of-number and numbering-plan values.
_TONS: Final = frozenset(range(7))
_NPIS: Final = frozenset({0, 1, 3, 4, 6, 8, 9, 10, 14, 18})


def _c_octet(limit: int) -> AfterValidator:
    """SMPP 3.4 C-Octet Strings: ASCII, no NUL, ``limit`` characters plus the NUL."""

    def check(value: str) -> str:
        if not value.isascii() or not value.isprintable():
            raise ValueError("must be printable ASCII")
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters (SMPP 3.4)")
        return value

    return AfterValidator(check)


def _c_octet_secret(limit: int) -> AfterValidator:
    def check(value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if not text.isascii() or not text.isprintable():
            raise ValueError("must be printable ASCII")
        if len(text) > limit:
            raise ValueError(f"must be at most {limit} characters (SMPP 3.4)")
        return value

    return AfterValidator(check)


def _ton(value: int) -> int:
    if value not in _TONS:
        raise ValueError("type of number must be 0-6 (SMPP 3.4 §5.2.5)")
    return value


def _npi(value: int) -> int:
    if value not in _NPIS:
        raise ValueError("numbering plan must be one of 0, 1, 3, 4, 6, 8, 9, 10, 14, 18 (§5.2.6)")
    return value


def _registered_delivery(value: int) -> int:
    # §5.2.17: bits 1-0 SMSC receipt (3 is reserved), 3-2 SME acknowledgement, 4 intermediate.
    if not 0 <= value <= 0x1F or value & 0x03 == 0x03:
        raise ValueError("must be 0-31 with SMSC receipt bits (1-0) other than 3 (§5.2.17)")
    return value


Ton = Annotated[int, AfterValidator(_ton)]
Npi = Annotated[int, AfterValidator(_npi)]


class RouteConfig(Section):
    """One operator account: where to connect, how many binds, and their limits."""

    secret_keys = ("password",)

    name: Name
    prefixes: tuple[Prefix, ...]
    """Destinations this route carries, longest prefix wins; ``""`` matches all. Empty: the
    route carries traffic only as another route's ``backup``."""
    backup: Name | None = None
    """The route that carries this one's traffic while none of its binds is up."""

    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] = 2775
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: ExistingFile | None = None
    tls_cert_file: ExistingFile | None = None
    tls_key_file: ExistingFile | None = None
    tls_server_hostname: Host | None = None

    system_id: Annotated[str, Field(min_length=1), _c_octet(15)]
    password: Annotated[SecretStr, BeforeValidator(reject_invalid), _c_octet_secret(8)] = SecretStr(
        ""
    )
    password_env: EnvVarName | None = None
    system_type: Annotated[str, _c_octet(12)] = ""
    bind: Literal["transmitter", "receiver", "transceiver"] = "transceiver"
    addr_ton: Ton = 0
    addr_npi: Npi = 0
    address_range: Annotated[str, _c_octet(40)] = ""

    binds: Annotated[int, Field(ge=1, le=64)] = 1
    window: Annotated[int, Field(ge=1, le=1000)] = 10
    tps: Annotated[float, Field(gt=0)] | None = None
    tps_burst: Annotated[float, Field(ge=1)] | None = None

    segmentation: Literal["udh", "udh16", "sar", "payload"] = "udh"
    national_shift: Literal["turkish", "none"] = "none"
    registered_delivery: Annotated[int, AfterValidator(_registered_delivery)] = 1
    service_type: Annotated[str, _c_octet(5)] = ""
    source_addr_ton: Ton | None = None
    """None: from the sender (alphanumeric 5/0, ``+`` international 1/1, else 0/1)."""
    source_addr_npi: Npi | None = None
    dest_addr_ton: Ton = 1
    dest_addr_npi: Npi = 1
    allowed_senders: tuple[Sender, ...] = ()
    default_sender: Sender | None = None
    max_command_length: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65536 + 1024

    connect_timeout_s: Seconds = 10.0
    bind_timeout_s: Seconds = 10.0
    response_timeout_s: Seconds = 30.0
    enquire_link_interval_s: Seconds = 30.0
    inactivity_timeout_s: NonNegativeSeconds = 120.0
    """0 disables it."""
    unbind_timeout_s: Seconds = 2.0
    shutdown_grace_s: NonNegativeSeconds = 5.0

    reconnect_initial_s: Seconds = 1.0
    reconnect_max_s: Seconds = 60.0
    reconnect_multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0
    reconnect_jitter: Annotated[float, Field(ge=0, le=1)] = 0.5
    backoff_reset_after_s: Seconds = 30.0

    throttle_decrease_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    throttle_hold_s: NonNegativeSeconds = 1.0
    throttle_increase_step: Annotated[float, Field(gt=0, le=1)] = 0.05
    throttle_increase_interval_s: Seconds = 1.0
    throttle_floor_tps: Annotated[float, Field(gt=0)] = 1.0
    throttle_retry_s: Seconds = 1.0
    error_retry_s: Seconds = 5.0

    deliver_workers: Annotated[int, Field(ge=1, le=1024)] = 8
    deliver_queue_limit: Annotated[int, Field(ge=1)] = 256
    deliver_stall_s: Seconds = 2.0

    @model_validator(mode="after")
    def _consistent(self) -> RouteConfig:
        if not self.tls:
            given = [
                key
                for key in ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_hostname")
                if getattr(self, key) is not None
            ]
            if given:
                raise ValueError(f"{given[0]} is set but tls is false")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give tls_cert_file and tls_key_file together (client certificate)")
        if self.bind == "receiver" and self.prefixes:
            raise ValueError("a receiver bind cannot submit, so the route must have no prefixes")
        if self.tps_burst is not None and self.tps is None:
            raise ValueError("tps_burst needs tps")
        if 0 < self.inactivity_timeout_s <= self.enquire_link_interval_s:
            raise ValueError("inactivity_timeout_s must exceed enquire_link_interval_s (or be 0)")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        check_default_sender(self.default_sender, self.allowed_senders)
        return self
