"""The vocabulary of binds: settings of a route, states, failure kinds, counters, snapshots.

Plain data shared by :mod:`gateway.bind` (one connection's life), :mod:`gateway.binds` (the
supervisor) and, later, metrics and the HTTP readiness check.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import trio

from protocols.session import SessionConfig

if TYPE_CHECKING:
    from gateway.config import RouteConfig

__all__ = [
    "BindCounters",
    "BindFailure",
    "BindMode",
    "BindState",
    "BindStatus",
    "FailureKind",
    "RouteSettings",
    "StateWatch",
]


class BindMode(enum.Enum):
    """How a bind binds (SMPP 3.4 §4.1): what it may send and receive."""

    TRANSMITTER = "transmitter"
    RECEIVER = "receiver"
    TRANSCEIVER = "transceiver"

    @property
    def transmits(self) -> bool:
        """Whether submit_sm may be sent on such a bind."""
        return self is not BindMode.RECEIVER

    @property
    def receives(self) -> bool:
        """Whether the SMSC may deliver (receipts, MO) on such a bind."""
        return self is not BindMode.TRANSMITTER


class BindState(enum.Enum):
    """Where a bind is in its life; :attr:`gateway.bind.Bind.last_failure` says why it was
    last down."""

    DOWN = "down"
    """Not connected: before the first attempt, or waiting out the reconnect backoff."""
    CONNECTING = "connecting"
    BINDING = "binding"
    BOUND = "bound"
    UNBINDING = "unbinding"
    """Our unbind or the SMSC's is draining outstanding requests."""
    STOPPED = "stopped"
    """Shut down for good."""


class FailureKind(enum.Enum):
    """Why a connection attempt or a connection ended."""

    CONNECT_REFUSED = "connect_refused"
    CONNECT_TIMEOUT = "connect_timeout"
    NETWORK = "network"
    """A socket error or a reset while connected."""
    TLS = "tls"
    """The TLS handshake failed (certificate, protocol)."""
    BAD_CREDENTIALS = "bad_credentials"
    """ESME_RINVPASWD or ESME_RINVSYSID: fix the configuration."""
    ALREADY_BOUND = "already_bound"
    """ESME_RALYBND: the account has as many binds as the operator allows."""
    BIND_REFUSED = "bind_refused"
    """Another status in the bind response (ESME_RBINDFAIL, a generic_nack, ...)."""
    BIND_TIMEOUT = "bind_timeout"
    PEER_DEAD = "peer_dead"
    """enquire_link unanswered (or nothing received for the inactivity timeout)."""
    PROTOCOL_ERROR = "protocol_error"
    """The SMSC's byte stream could not be framed (bad command_length)."""
    CLOSED_BY_PEER = "closed_by_peer"
    UNBOUND_BY_PEER = "unbound_by_peer"
    INTERNAL_ERROR = "internal_error"
    """A bug of ours, logged with its traceback; the bind reconnects."""


@dataclass(frozen=True, slots=True)
class BindFailure:
    """The classified cause of a bind being down."""

    kind: FailureKind
    detail: str
    at: float
    """``trio.current_time()`` of the failure."""
    command_status: int | None = None
    """The bind response's status, for the bind failures."""

    def __str__(self) -> str:
        status = "" if self.command_status is None else f" (status 0x{self.command_status:X})"
        return f"{self.kind.value}{status}: {self.detail}"


@dataclass(slots=True)
class BindCounters:
    """Per-bind counters, kept across reconnects (the source of later metrics)."""

    connects: int = 0
    reconnects: int = 0
    bind_failures: int = 0
    sent: int = 0
    """submit_sm written."""
    submitted: int = 0
    """submit_sm_resp with ESME_ROK."""
    response_time_s: float = 0.0
    """Sum of submit_sm → submit_sm_resp times over ``submitted`` (the observed round trip)."""
    rejected: int = 0
    throttled: int = 0
    """ESME_RTHROTTLED / ESME_RMSGQFUL answers."""
    transient_errors: int = 0
    timeouts: int = 0
    retried: int = 0
    duplicates_risk: int = 0
    """Parts retried after a timeout or a lost connection while outstanding."""
    late_responses: int = 0
    """Responses to requests already timed out (or unknown sequence numbers)."""
    generic_nacks: int = 0
    malformed: int = 0
    protocol_errors: int = 0
    peer_dead: int = 0
    delivers: int = 0
    """deliver_sm / data_sm received (receipts and MO)."""
    deliver_errors: int = 0
    """deliver_sm answered with a non-zero status (as the sink decided, or deferred)."""
    delivers_deferred: int = 0
    """deliver_sm answered ESME_RX_T_APPN untaken, the store stuck (``deliver_stall_s``)."""
    rate_decreases: int = 0
    rate_increases: int = 0
    max_in_flight: int = 0

    def add(self, other: BindCounters) -> None:
        """Add ``other`` into these counters (``max_in_flight`` takes the maximum)."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            value = max(mine, theirs) if f.name == "max_in_flight" else mine + theirs
            setattr(self, f.name, value)


@dataclass(frozen=True, slots=True)
class BindStatus:
    """A snapshot of one bind for the router, logs and metrics."""

    name: str
    route: str
    state: BindState
    up: bool
    """Bound and able to submit."""
    last_failure: BindFailure | None
    in_flight: int
    rate: float | None
    """The current send rate limit (submit_sm/s), None when unlimited."""
    lowest_rate: float | None
    """The lowest rate throttling has cut it to, None if never cut."""
    counters: BindCounters


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSettings:
    """What the binds of one route need to know (built from the route's config).

    Raises:
        ValueError: on values that cannot work (no binds, a non-positive window or timeout).
    """

    name: str
    host: str
    port: int
    system_id: str
    password: str = field(default="", repr=False)  # never logged, never in a repr
    system_type: str = ""
    bind_mode: BindMode = BindMode.TRANSCEIVER
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    prefixes: tuple[str, ...] = ()
    backup: str | None = None
    binds: int = 1
    window: int = 10
    """submit_sm outstanding per bind, never more."""
    tps: float | None = None
    """submit_sm per second per bind, as agreed with the operator; None: unlimited (until the
    SMSC throttles, then the observed rate becomes the ceiling)."""
    tps_burst: float | None = None
    """Token bucket depth; None: 50 ms of ``tps`` (at least 1), below the SMSC's own burst."""
    tls: bool = False
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    """None with ``tls``: the system's default verifying context."""
    tls_server_hostname: str | None = None
    """Name to verify the certificate against; None: ``host``."""
    connect_timeout_s: float = 10.0
    bind_timeout_s: float = 10.0
    response_timeout_s: float = 30.0
    enquire_link_interval_s: float = 30.0
    inactivity_timeout_s: float | None = None
    max_command_length: int = 65536 + 1024
    """Largest PDU accepted from the SMSC; a larger command_length is a framing error."""
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 60.0
    reconnect_multiplier: float = 2.0
    reconnect_jitter: float = 0.5
    backoff_reset_after_s: float = 30.0
    """A connection bound at least this long resets the backoff (a flapping SMSC does not)."""
    throttle_retry_s: float = 1.0
    """Delay before a throttled part is offered again."""
    error_retry_s: float = 5.0
    """Delay before a part answered with a temporary error or a generic_nack is offered again."""
    throttle_decrease_factor: float = 0.5
    throttle_hold_s: float = 1.0
    throttle_increase_step: float = 0.05
    throttle_increase_interval_s: float = 1.0
    throttle_floor_tps: float = 1.0
    deliver_workers: int = 8
    """deliver_sm handled concurrently per bind (the store groups their commits)."""
    deliver_queue_limit: int = 256
    """Stop reading from the SMSC while this many deliver_sm are pending."""
    deliver_stall_s: float = 2.0
    """How long the reader stops at ``deliver_queue_limit`` with none of them answered before
    it reads on, answering new deliver_sm with ESME_RX_T_APPN until they move."""
    shutdown_grace_s: float = 5.0
    """How long a graceful shutdown waits for outstanding responses before unbinding."""
    unbind_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        # SMPP 3.4 §4.1.1: C-octet strings of at most 16, 9 and 13 octets with the NUL.
        for name, limit in (("system_id", 15), ("password", 8), ("system_type", 12)):
            if len(getattr(self, name).encode("latin-1", "replace")) > limit:
                # Never echo the value: it may be the password.
                raise ValueError(f"route {self.name!r}: {name} longer than {limit} characters")
        if self.binds < 1 or self.window < 1:
            raise ValueError(f"route {self.name!r}: binds and window must be at least 1")
        if self.tps is not None and self.tps <= 0:
            raise ValueError(f"route {self.name!r}: tps must be positive")
        if self.deliver_workers < 1 or self.deliver_queue_limit < 1:
            raise ValueError(f"route {self.name!r}: deliver workers and queue must be >= 1")
        for name in (
            "connect_timeout_s",
            "bind_timeout_s",
            "response_timeout_s",
            "enquire_link_interval_s",
            "reconnect_initial_s",
            "reconnect_max_s",
            "unbind_timeout_s",
            "deliver_stall_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"route {self.name!r}: {name} must be positive")

    def session_config(self) -> SessionConfig:
        """The sans-IO session settings of one connection."""
        return SessionConfig(
            window=self.window,
            response_timeout=self.response_timeout_s,
            enquire_link_interval=self.enquire_link_interval_s,
            inactivity_timeout=self.inactivity_timeout_s,
            max_command_length=self.max_command_length,
        )

    @classmethod
    def from_config(cls, route: RouteConfig) -> RouteSettings:
        """The settings of a validated ``[[routes]]`` entry (``password_env`` already read)."""
        tls_context = None
        if route.tls:
            cafile = None if route.tls_ca_file is None else str(route.tls_ca_file)
            tls_context = ssl.create_default_context(cafile=cafile)
            if not route.tls_verify:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
            if route.tls_cert_file is not None and route.tls_key_file is not None:
                tls_context.load_cert_chain(route.tls_cert_file, route.tls_key_file)
        return cls(
            name=route.name,
            host=route.host,
            port=route.port,
            system_id=route.system_id,
            password=route.password.get_secret_value(),
            system_type=route.system_type,
            bind_mode=BindMode(route.bind),
            addr_ton=route.addr_ton,
            addr_npi=route.addr_npi,
            address_range=route.address_range,
            prefixes=tuple(route.prefixes),
            backup=route.backup,
            binds=route.binds,
            window=route.window,
            tps=route.tps,
            tps_burst=route.tps_burst,
            tls=route.tls,
            tls_context=tls_context,
            tls_server_hostname=route.tls_server_hostname,
            connect_timeout_s=route.connect_timeout_s,
            bind_timeout_s=route.bind_timeout_s,
            response_timeout_s=route.response_timeout_s,
            enquire_link_interval_s=route.enquire_link_interval_s,
            inactivity_timeout_s=route.inactivity_timeout_s or None,  # 0 disables it
            max_command_length=route.max_command_length,
            reconnect_initial_s=route.reconnect_initial_s,
            reconnect_max_s=route.reconnect_max_s,
            reconnect_multiplier=route.reconnect_multiplier,
            reconnect_jitter=route.reconnect_jitter,
            backoff_reset_after_s=route.backoff_reset_after_s,
            throttle_retry_s=route.throttle_retry_s,
            error_retry_s=route.error_retry_s,
            throttle_decrease_factor=route.throttle_decrease_factor,
            throttle_hold_s=route.throttle_hold_s,
            throttle_increase_step=route.throttle_increase_step,
            throttle_increase_interval_s=route.throttle_increase_interval_s,
            throttle_floor_tps=route.throttle_floor_tps,
            deliver_workers=route.deliver_workers,
            deliver_queue_limit=route.deliver_queue_limit,
            deliver_stall_s=route.deliver_stall_s,
            shutdown_grace_s=route.shutdown_grace_s,
            unbind_timeout_s=route.unbind_timeout_s,
        )


class StateWatch:
    """A condition variable over bind states: binds ``notify()`` on every change, waiters
    re-check their predicate (readiness, tests). Not a callback: nothing runs on notify."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        event, self._event = self._event, trio.Event()
        event.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true (checked now and after every change)."""
        while not predicate():
            await self._event.wait()
