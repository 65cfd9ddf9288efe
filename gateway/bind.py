"""One SMPP bind for its whole life: connect, bind, serve, and reconnect after any failure.

A :class:`Bind` is one configured SMPP connection of a route; :meth:`Bind.run` is its single
long-lived task (the supervisor starts one per bind in its nursery). The task loops: connect
(TCP, or TLS through :class:`trio.SSLStream` when the route says so), hand the stream to a
:class:`~gateway.connection.Connection` (bind, windowed submit, enquire_link, receipts; see
that module for its tasks), and after the connection ends wait a jittered exponential backoff
(:class:`gateway.backoff.Backoff`) before the next attempt.

Failures are classified (:class:`~gateway.bindstate.FailureKind`) and kept in
:attr:`Bind.last_failure` and the log, so a bad password or an operator refusing the bind is
visible, not a silent reconnect storm. Errors the bind expects (socket and TLS errors, framing
errors, dead peers) are failures like any other; an unexpected exception is logged with its
traceback and treated as a failure too, so one bind never takes the daemon down (``strict``
re-raises it instead, for tests). Cancellation is never caught.

The bind keeps what must outlive a connection: its counters, the backoff, and the send rate
(:class:`RateControl`): a throttled bind stays slowed down across a reconnect.
"""

from __future__ import annotations

import logging
import math
import random
import ssl

import trio

from gateway.backoff import Backoff
from gateway.bindstate import (
    BindCounters,
    BindFailure,
    BindState,
    BindStatus,
    FailureKind,
    RouteSettings,
    StateWatch,
)
from gateway.connection import Connection
from gateway.parts import PartSink, PartSource
from gateway.ratelimit import AdaptiveRate, TokenBucket

__all__ = ["Bind", "RateControl"]

logger = logging.getLogger(__name__)

_IDLE_GAP_S = 2.0  # a longer pause between sends does not count in the observed send rate
# Default bucket depth: 50 ms of the rate. Smaller than what SMSCs allow (the simulator: 100 ms,
# many operators: a whole second), so the SMSC's bucket keeps a reserve for the jitter between
# our clock and its own: a burst we pay for here may arrive bunched up there.
_BURST_S = 0.05
# Under a TPS limit, wait for this much of the rate before writing, rather than writing every
# token as it comes: a few submit_sm per send_all instead of one (each costs a syscall and a
# wake-up of the peer), for at most 5 ms of added latency.
_MIN_BATCH_S = 0.005
_BIND_FAILURES = frozenset(
    {
        FailureKind.BAD_CREDENTIALS,
        FailureKind.ALREADY_BOUND,
        FailureKind.BIND_REFUSED,
        FailureKind.BIND_TIMEOUT,
    }
)
_LOUD_FAILURES = frozenset({FailureKind.BAD_CREDENTIALS, FailureKind.INTERNAL_ERROR})


class RateControl:
    """A bind's send rate: a token bucket at the agreed TPS, cut at once by throttling answers
    and raised back gradually (AIMD, :class:`gateway.ratelimit.AdaptiveRate`).

    A bind without a configured TPS is unlimited until the SMSC first throttles it; the rate it
    was sending at then becomes the ceiling, and the limit is lifted again once the rate has
    climbed back to it. Clock-injected like its parts: every method takes ``now``.
    """

    __slots__ = (
        "_counters",
        "_mark_sent",
        "_mark_time",
        "_name",
        "_observed",
        "_settings",
        "adaptive",
        "bucket",
        "lowest",
    )

    def __init__(
        self, settings: RouteSettings, counters: BindCounters, now: float, name: str = ""
    ) -> None:
        self._settings = settings
        self._counters = counters
        self._name = name or settings.name
        self.bucket: TokenBucket | None = None
        self.adaptive: AdaptiveRate | None = None
        self.lowest: float | None = None
        """The lowest rate throttling has cut the bind to (None: never cut)."""
        self._mark_time = now
        self._mark_sent = 0
        self._observed = 0.0
        if settings.tps is not None:
            self._limit(settings.tps, settings.tps_burst, now)

    def _limit(self, ceiling: float, burst: float | None, now: float) -> None:
        s = self._settings
        self.bucket = TokenBucket(ceiling, burst or max(1.0, ceiling * _BURST_S), now)
        self.adaptive = AdaptiveRate(
            ceiling,
            now,
            floor=min(ceiling, s.throttle_floor_tps),
            decrease_factor=s.throttle_decrease_factor,
            decrease_hold_s=s.throttle_hold_s,
            increase_step=s.throttle_increase_step,
            increase_interval_s=s.throttle_increase_interval_s,
        )

    @property
    def rate(self) -> float | None:
        """The current limit in submit_sm/s, None when unlimited."""
        return None if self.bucket is None else self.bucket.rate

    def batch(self, bucket: TokenBucket, free: int) -> int:
        """How many tokens to wait for before writing, with ``free`` window slots."""
        return max(1, min(free, int(bucket.rate * _MIN_BATCH_S), int(bucket.burst)))

    def refresh(self, now: float) -> None:
        """Let the rate climb back for the quiet time since the last change."""
        adaptive, bucket = self.adaptive, self.bucket
        if adaptive is None or bucket is None or adaptive.rate >= adaptive.ceiling:
            return
        rate = adaptive.update(now)
        if rate != bucket.rate:
            bucket.set_rate(rate, now)
            self._counters.rate_increases += 1
            if rate >= adaptive.ceiling and self._settings.tps is None:
                self.bucket = self.adaptive = None  # recovered: unlimited again

    def note_sent(self, now: float, sent: int) -> None:
        """Track the send rate (``sent`` is the running total), the ceiling of an unlimited
        bind that gets throttled."""
        elapsed = now - self._mark_time
        if elapsed >= 1.0:
            if elapsed <= _IDLE_GAP_S:
                self._observed = (sent - self._mark_sent) / elapsed
            self._mark_time = now
            self._mark_sent = sent

    def on_throttled(self, now: float) -> None:
        """An ESME_RTHROTTLED / ESME_RMSGQFUL answer: cut the rate (once per hold time)."""
        if self.adaptive is None:
            elapsed = now - self._mark_time
            recent = (self._counters.sent - self._mark_sent) / elapsed if elapsed > 0.1 else 0.0
            ceiling = max(self._settings.throttle_floor_tps, self._observed, recent)
            self._limit(ceiling, None, now)
        adaptive, bucket = self.adaptive, self.bucket
        assert adaptive is not None and bucket is not None
        if adaptive.on_throttled(now):
            bucket.set_rate(adaptive.rate, now)
            self._counters.rate_decreases += 1
            if self.lowest is None or adaptive.rate < self.lowest:
                self.lowest = adaptive.rate
            logger.info("%s throttled: send rate cut to %.1f/s", self._name, adaptive.rate)


def _classify_connect_error(exc: BaseException) -> FailureKind:
    if isinstance(exc, (trio.BrokenResourceError, ssl.SSLError)):
        return FailureKind.TLS  # SSLStream.do_handshake wraps ssl errors in BrokenResourceError
    # trio.open_tcp_stream raises one OSError for all attempts, with their errors as the cause.
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if isinstance(error, ConnectionRefusedError):
            return FailureKind.CONNECT_REFUSED
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        if error.__cause__ is not None:
            pending.append(error.__cause__)
    return FailureKind.NETWORK


class Bind:
    """One SMPP connection of a route, for its whole life (see the module docstring).

    Args:
        settings: the route's settings.
        index: 1-based number of this bind in the route's pool; the bind is named
            ``"<route>#<index>"`` in logs, outcomes and stats.
        source: where parts for ``settings.name`` come from.
        sink: where outcomes, receipts and MO go.
        watch: notified on every state change (the supervisor's).
        strict: re-raise unexpected exceptions instead of logging them and reconnecting.
        rng: random source of the backoff jitter.
    """

    def __init__(
        self,
        settings: RouteSettings,
        index: int,
        source: PartSource,
        sink: PartSink,
        *,
        watch: StateWatch | None = None,
        strict: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.route = settings.name
        self.name = f"{settings.name}#{index}"
        self.source = source
        self.sink = sink
        self.counters = BindCounters()
        self.state = BindState.DOWN
        self.last_failure: BindFailure | None = None
        self.stopping = False
        self.stop_deadline = math.inf
        """Until when a graceful stop waits for outstanding responses before unbinding."""
        self._watch = watch if watch is not None else StateWatch()
        self._strict = strict
        self._backoff = Backoff(
            settings.reconnect_initial_s,
            settings.reconnect_max_s,
            multiplier=settings.reconnect_multiplier,
            jitter=settings.reconnect_jitter,
            rng=rng,
        )
        self._rate: RateControl | None = None
        self._phase_scope: trio.CancelScope | None = None  # connect or backoff: stop cancels it
        self._conn: Connection | None = None

    # --- inspection -------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        """Bound and able to submit (what the router asks)."""
        return self.state is BindState.BOUND and self.settings.bind_mode.transmits

    @property
    def in_flight(self) -> int:
        """submit_sm awaiting their response now."""
        conn = self._conn
        return 0 if conn is None else conn.session.in_flight

    @property
    def rate(self) -> RateControl:
        """The send rate control (exists once :meth:`run` has started)."""
        if self._rate is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._rate

    def status(self) -> BindStatus:
        """A snapshot for the router, logs and metrics."""
        rate = self._rate
        counters = BindCounters()
        counters.add(self.counters)
        return BindStatus(
            name=self.name,
            route=self.route,
            state=self.state,
            up=self.is_up,
            last_failure=self.last_failure,
            in_flight=self.in_flight,
            rate=None if rate is None else rate.rate,
            lowest_rate=None if rate is None else rate.lowest,
            counters=counters,
        )

    # --- control ----------------------------------------------------------------------------

    def request_stop(self, deadline: float) -> None:
        """Begin a graceful stop: take no more work, wait for outstanding responses until
        ``deadline`` (``trio.current_time()`` based), unbind, close. :meth:`run` returns when
        done. Calling it again only moves the deadline earlier."""
        self.stopping = True
        self.stop_deadline = min(self.stop_deadline, deadline)
        if self._phase_scope is not None:
            self._phase_scope.cancel()
        if self._conn is not None:
            self._conn.attention.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the bind up until :meth:`request_stop` (or cancellation).

        Raises:
            Exception: only with ``strict``: an exception the bind does not expect.
        """
        if self._rate is None:
            self._rate = RateControl(self.settings, self.counters, trio.current_time(), self.name)
        task_status.started()
        try:
            while not self.stopping:
                try:
                    failure = await self._connect_and_serve()
                except Exception as exc:
                    if self._strict:
                        raise
                    logger.exception("%s: unexpected error", self.name)
                    failure = BindFailure(
                        FailureKind.INTERNAL_ERROR, repr(exc), trio.current_time()
                    )
                if self.stopping:
                    break
                await self._backoff_after(failure)
        finally:
            self.set_state(BindState.STOPPED)

    # --- the reconnect loop -----------------------------------------------------------------

    async def _connect_and_serve(self) -> BindFailure | None:
        s = self.settings
        if self.counters.connects or self.last_failure is not None:
            self.counters.reconnects += 1
        self.set_state(BindState.CONNECTING)
        stream: trio.abc.Stream | None = None
        with trio.CancelScope() as self._phase_scope:
            with trio.move_on_after(s.connect_timeout_s) as timeout:
                try:
                    stream = await self._open_stream()
                except (OSError, trio.BrokenResourceError) as exc:
                    kind = _classify_connect_error(exc)
                    return BindFailure(kind, str(exc) or repr(exc), trio.current_time())
            if timeout.cancelled_caught:
                detail = f"no connection to {s.host}:{s.port} in {s.connect_timeout_s}s"
                return BindFailure(FailureKind.CONNECT_TIMEOUT, detail, trio.current_time())
        self._phase_scope = None
        if stream is None:  # stopped while connecting
            return None
        self.counters.connects += 1
        conn = self._conn = Connection(self, stream)
        try:
            return await conn.run()
        finally:
            self._conn = None
            conn.abandon()  # synchronous: runs even when we are being cancelled
            await conn.last_words()  # shielded; a no-op unless cancelled while bound
            await trio.aclose_forcefully(stream)

    async def _open_stream(self) -> trio.abc.Stream:
        s = self.settings
        tcp = await trio.open_tcp_stream(s.host, s.port)  # trio sets TCP_NODELAY
        if not s.tls:
            return tcp
        context = s.tls_context if s.tls_context is not None else ssl.create_default_context()
        stream = trio.SSLStream(tcp, context, server_hostname=s.tls_server_hostname or s.host)
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return stream

    async def _backoff_after(self, failure: BindFailure | None) -> None:
        delay = self._backoff.next_delay()
        self.set_state(BindState.DOWN, failure)
        if failure is not None:
            level = logging.ERROR if failure.kind in _LOUD_FAILURES else logging.WARNING
            logger.log(level, "%s down: %s; reconnecting in %.2fs", self.name, failure, delay)
        else:
            logger.info("%s closed; reconnecting in %.2fs", self.name, delay)
        with trio.CancelScope() as self._phase_scope:
            await trio.sleep(delay)
        self._phase_scope = None

    # --- called by the connection -----------------------------------------------------------

    def set_state(self, state: BindState, failure: BindFailure | None = None) -> None:
        """Record a state change (and the failure that caused it) and notify the watch."""
        if failure is not None:
            self.last_failure = failure
            if failure.kind in _BIND_FAILURES:
                self.counters.bind_failures += 1
        if state is not self.state:
            logger.debug("%s: %s -> %s", self.name, self.state.value, state.value)
            self.state = state
        self._watch.notify()

    def on_bound(self) -> None:
        s = self.settings
        logger.info("%s bound to %s:%s as %s", self.name, s.host, s.port, s.bind_mode.value)
        self.set_state(BindState.BOUND)

    def on_connection_end(self, bound_for: float) -> None:
        """A connection that stayed bound long enough resets the backoff; a flapping SMSC
        that accepts binds and drops them at once keeps it growing."""
        if bound_for >= self.settings.backoff_reset_after_s:
            self._backoff.reset()
