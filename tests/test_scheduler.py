"""The scheduler: strict class priority, minimum shares, deferral, expiry, cancel-safety.

Most of it is a hypothesis state machine over generated workloads (parts of every class put,
deferred, retried and taken on two routes while a fake wall clock advances), checked against a
model of which parts are live and ready. Waking is tested under trio's MockClock, with the
scheduler's wall clock derived from ``trio.current_time()``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from benchmarks.queue_memory import measure
from gateway.parts import OutboundPart
from gateway.scheduler import Scheduler
from protocols.pdu import SubmitSm
from queues.classqueue import CLASSES, ClassQueues, QueuedPart
from queues.model import MessageClass

OTP = MessageClass.OTP
TRANSACTIONAL = MessageClass.TRANSACTIONAL
MARKETING = MessageClass.MARKETING
EPOCH = 1_800_000_000.0
ROUTES = ("operator-a", "operator-b")
_ids = itertools.count()


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def build(part: QueuedPart) -> SubmitSm:
    assert isinstance(part.payload, bytes)
    return SubmitSm(destination_addr="+905551234567", short_message=part.payload)


def make_part(
    klass: MessageClass, route: str = "operator-a", valid_until: float = math.inf, index: int = 0
) -> QueuedPart:
    return QueuedPart(f"m{next(_ids)}", index, klass, route, valid_until, b"hello")


def make_scheduler(
    clock: FakeClock | None = None,
    shares: dict[MessageClass, float] | None = None,
) -> tuple[Scheduler, ClassQueues, list[QueuedPart]]:
    queues = ClassQueues()
    expired: list[QueuedPart] = []
    scheduler = Scheduler(
        queues,
        build,
        min_shares={} if shares is None else shares,
        clock=clock or FakeClock(),
        on_expired=expired.append,
    )
    return scheduler, queues, expired


def take(scheduler: Scheduler, route: str = "operator-a") -> QueuedPart | None:
    out = scheduler.get_nowait(route)
    if out is None:
        return None
    assert isinstance(out.part_id, QueuedPart)
    return out.part_id


# --- generated workloads --------------------------------------------------------------------


class SchedulerMachine(RuleBasedStateMachine):
    """Puts, defers, retries and takes on two routes; the model knows every part's fate."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.queues = ClassQueues()
        self.expired: list[QueuedPart] = []
        self.scheduler: Scheduler | None = None
        self.shares = [0.0, 0.0, 0.0]
        self.ready_at: dict[QueuedPart, float] = {}
        """Parts in the queues (ready or deferred) and when they are ready."""
        self.put_count = 0
        self.returned: set[QueuedPart] = set()
        self.outstanding: list[QueuedPart] = []
        self.expired_set: set[QueuedPart] = set()
        self.skipped_otp = dict.fromkeys(ROUTES, 0)
        # Per route and class: takes while the class had live ready work, and its share of them.
        self.had_work = {route: [0, 0, 0] for route in ROUTES}
        self.got = {route: [0, 0, 0] for route in ROUTES}
        self.share_slots = {route: [0, 0, 0] for route in ROUTES}

    @initialize(
        transactional=st.floats(0, 0.25),
        marketing=st.floats(0, 0.25),
    )
    def setup(self, transactional: float, marketing: float) -> None:
        self.shares = [0.0, transactional, marketing]
        self.scheduler = Scheduler(
            self.queues,
            build,
            min_shares={TRANSACTIONAL: transactional, MARKETING: marketing},
            clock=self.clock,
            on_expired=self.expired.append,
        )

    @property
    def sched(self) -> Scheduler:
        assert self.scheduler is not None
        return self.scheduler

    def _new(self, klass: MessageClass, route: str, validity: float) -> QueuedPart:
        self.put_count += 1
        return make_part(klass, route, self.clock.now + validity)

    @rule(
        klass=st.sampled_from(CLASSES),
        route=st.sampled_from(ROUTES),
        k=st.integers(1, 120),
        validity=st.sampled_from([3.0, 60.0, 1e6]),
    )
    def enqueue(self, klass: MessageClass, route: str, k: int, validity: float) -> None:
        parts = [self._new(klass, route, validity) for _ in range(k)]
        self.sched.put_many(parts)
        for part in parts:
            self.ready_at[part] = self.clock.now

    @rule(
        klass=st.sampled_from(CLASSES),
        route=st.sampled_from(ROUTES),
        k=st.integers(1, 10),
        delay=st.floats(0.5, 100),
        validity=st.sampled_from([30.0, 1e6]),
    )
    def defer(self, klass: MessageClass, route: str, k: int, delay: float, validity: float) -> None:
        for _ in range(k):
            part = self._new(klass, route, validity)
            self.sched.defer(part, self.clock.now + delay)
            self.ready_at[part] = self.clock.now + delay

    @rule(dt=st.floats(0, 50))
    def advance(self, dt: float) -> None:
        self.clock.now += dt

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data(), delay=st.sampled_from([0.0, 0.0, 5.0]))
    def retry(self, data: st.DataObject, delay: float) -> None:
        part = self.outstanding.pop(data.draw(st.integers(0, len(self.outstanding) - 1)))
        self.returned.discard(part)
        self.sched.retry(part, delay, self.clock.now)
        self.ready_at[part] = self.clock.now + delay

    @rule(route=st.sampled_from(ROUTES), n=st.integers(1, 40))
    def take(self, route: str, n: int) -> None:
        now = self.clock.now
        for _ in range(n):
            live = [False, False, False]
            for queued, ready_at in self.ready_at.items():
                if queued.route == route and ready_at <= now < queued.valid_until:
                    live[queued.klass.priority] = True
            out = self.sched.get_nowait(route)
            self._settle_expired()
            if out is None:
                assert not any(live), "a live ready part was not handed out"
                break
            part = out.part_id
            assert isinstance(part, QueuedPart)
            assert out.route == route == part.route
            assert out.pdu.short_message == part.payload
            assert part not in self.returned and part not in self.expired_set
            assert self.ready_at.pop(part) <= now < part.valid_until
            assert live[part.klass.priority]
            # strict priority: nothing above the taken class waits, except an OTP behind a
            # single share slot.
            higher = [c for c in range(part.klass.priority) if live[c]]
            if live[0] and part.klass is not OTP:
                self.skipped_otp[route] += 1
                assert self.skipped_otp[route] <= 1, "an OTP waited behind two slots"
            else:
                self.skipped_otp[route] = 0
            for c in range(3):
                if live[c]:
                    self.had_work[route][c] += 1
            if higher:  # a share slot: never more of them than the share allows
                c = part.klass.priority
                self.share_slots[route][c] += 1
                assert self.share_slots[route][c] <= self.shares[c] * self.had_work[route][c] + 1e-6
            self.got[route][part.klass.priority] += 1
            self.returned.add(part)
            self.outstanding.append(part)

    def _settle_expired(self) -> None:
        for part in self.expired:
            assert part not in self.expired_set and part not in self.returned
            assert part.valid_until <= self.clock.now
            self.ready_at.pop(part)
            self.expired_set.add(part)
        self.expired.clear()

    @invariant()
    def nothing_lost_or_duplicated(self) -> None:
        queued = self.queues.pending() + self.queues.deferred()
        assert queued == len(self.ready_at)
        assert len(self.returned) + len(self.expired_set) + queued == self.put_count

    @invariant()
    def lower_classes_get_their_share(self) -> None:
        for route in ROUTES:
            for c in (1, 2):
                owed = math.floor(self.shares[c] * self.had_work[route][c] + 1e-9) - 1
                assert self.got[route][c] >= owed, (route, c, self.had_work, self.got)

    @invariant()
    def metrics_match(self) -> None:
        depths = self.sched.depths()
        assert sum(depths.values()) == self.queues.pending()
        assert self.sched.deferred_count() == self.queues.deferred()


SchedulerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestSchedulerMachine = SchedulerMachine.TestCase


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(CLASSES), st.integers(1, 200)),
        st.tuples(st.just("take"), st.just(OTP), st.integers(1, 300)),
    ),
    max_size=12,
)


@given(transactional=st.floats(0, 0.25), marketing=st.floats(0, 0.25), ops=_ops)
def test_shares_and_otp_bound_on_backlogs(
    transactional: float, marketing: float, ops: list[tuple[str, MessageClass, int]]
) -> None:
    """Backlogs without time or expiry: long runs where the share rule is what decides."""
    shares = [0.0, transactional, marketing]
    scheduler, _, _ = make_scheduler(shares={TRANSACTIONAL: transactional, MARKETING: marketing})
    backlog = [0, 0, 0]
    had_work = [0, 0, 0]
    got = [0, 0, 0]
    share_slots = [0, 0, 0]
    skipped_otp = 0
    for op, klass, k in ops:
        if op == "put":
            scheduler.put_many(make_part(klass) for _ in range(k))
            backlog[klass.priority] += k
            continue
        for _ in range(k):
            part = take(scheduler)
            if part is None:
                assert backlog == [0, 0, 0]
                break
            c = part.klass.priority
            if backlog[0] and c:
                skipped_otp += 1
                assert skipped_otp <= 1
            else:
                skipped_otp = 0
            for other in range(3):
                had_work[other] += backlog[other] > 0
            if any(backlog[:c]):  # a share slot: never more of them than the share allows
                share_slots[c] += 1
                assert share_slots[c] <= shares[c] * had_work[c] + 1e-6
            got[c] += 1
            backlog[c] -= 1
            for other in (1, 2):
                assert got[other] >= math.floor(shares[other] * had_work[other] + 1e-9) - 1


# --- priority and shares, deterministic ----------------------------------------------------


def test_strict_priority_without_shares() -> None:
    scheduler, _, _ = make_scheduler()
    parts = [make_part(k) for k in (MARKETING, TRANSACTIONAL, OTP, MARKETING, OTP)]
    scheduler.put_many(parts)
    order = [take(scheduler) for _ in parts]
    assert order == [parts[2], parts[4], parts[1], parts[0], parts[3]]
    assert take(scheduler) is None


def test_routes_are_independent() -> None:
    scheduler, _, _ = make_scheduler()
    a, b = make_part(MARKETING, "operator-a"), make_part(OTP, "operator-b")
    scheduler.put_many([a, b])
    assert take(scheduler, "operator-a") is a
    assert take(scheduler, "operator-a") is None
    assert take(scheduler, "operator-b") is b


def test_reroute_moves_ready_parts_ahead_of_the_targets_own() -> None:
    scheduler, queues, _ = make_scheduler()
    old = [make_part(k, "operator-a") for k in (MARKETING, OTP, MARKETING, TRANSACTIONAL)]
    own = [make_part(k, "operator-b") for k in (MARKETING, OTP)]
    later = make_part(OTP, "operator-a", valid_until=math.inf)
    scheduler.put_many([*old, *own])
    scheduler.defer(later, 10**12)  # deferred parts stay: they move once ready
    assert scheduler.reroute("operator-a", "operator-b") == 4
    assert scheduler.reroute("operator-a", "operator-b") == 0
    assert queues.pending(route="operator-a") == 0 and queues.deferred() == 1
    order = [take(scheduler, "operator-b") for _ in range(6)]
    # Per class, the moved (older) parts first, in their own order.
    assert order == [old[1], own[1], old[3], old[0], old[2], own[0]]
    assert {p.route for p in order if p is not None} == {"operator-b"}


def test_default_shares_over_a_long_run() -> None:
    shares = {TRANSACTIONAL: 0.10, MARKETING: 0.05}
    scheduler, _, _ = make_scheduler(shares=shares)
    for klass in CLASSES:
        scheduler.put_many(make_part(klass) for _ in range(5_000))
    taken: list[MessageClass] = []
    for _ in range(2_000):
        part = take(scheduler)
        assert part is not None
        taken.append(part.klass)
    assert taken.count(TRANSACTIONAL) >= 0.10 * 2_000 - 1
    assert taken.count(MARKETING) >= 0.05 * 2_000 - 1
    # Every non-OTP slot was a share slot and was followed by an OTP.
    for first, second in itertools.pairwise(taken):
        assert first is OTP or second is OTP


def test_marketing_backlog_does_not_delay_otp() -> None:
    scheduler, queues, _ = make_scheduler(shares={TRANSACTIONAL: 0.10, MARKETING: 0.05})
    scheduler.put_many(make_part(MARKETING) for _ in range(100_000))
    otp = make_part(OTP)
    scheduler.put(otp)
    assert take(scheduler) is otp
    # Mid-flood, with marketing credit banked, it is at worst the second part out.
    for _ in range(1_234):
        assert take(scheduler) is not None
    otp = make_part(OTP)
    scheduler.put(otp)
    assert otp in (take(scheduler), take(scheduler))
    assert queues.pending(OTP) == 0


def test_rejects_impossible_shares() -> None:
    with pytest.raises(ValueError, match="sum below 1"):
        make_scheduler(shares={TRANSACTIONAL: 0.6, MARKETING: 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        make_scheduler(shares={MARKETING: -0.1})


def test_outbound_part_carries_the_queued_part() -> None:
    scheduler, _, _ = make_scheduler()
    part = make_part(TRANSACTIONAL, "operator-b")
    part.attempts = 2
    scheduler.put(part)
    out = scheduler.get_nowait("operator-b")
    assert isinstance(out, OutboundPart)
    assert out.part_id is part and out.route == "operator-b" and out.attempts == 2
    assert out.pdu == build(part)


# --- retry, deferral and expiry -------------------------------------------------------------


def test_retry_without_delay_goes_to_the_head_of_its_class() -> None:
    scheduler, _, _ = make_scheduler()
    first, second = make_part(MARKETING), make_part(MARKETING)
    scheduler.put_many([first, second])
    assert take(scheduler) is first
    scheduler.retry(first, 0.0, EPOCH)
    assert take(scheduler) is first
    assert take(scheduler) is second


def test_retry_with_delay_waits_then_goes_first() -> None:
    clock = FakeClock()
    scheduler, queues, _ = make_scheduler(clock)
    first, second = make_part(MARKETING), make_part(MARKETING)
    scheduler.put_many([first, second])
    assert take(scheduler) is first
    scheduler.retry(first, 10.0, clock.now)
    assert scheduler.deferred_count() == 1
    clock.now += 10.0
    assert take(scheduler) is first  # due: back at the head, ahead of `second`
    assert take(scheduler) is second
    assert queues.pending() == queues.deferred() == 0


def test_expired_parts_are_reported_and_never_returned() -> None:
    clock = FakeClock()
    scheduler, queues, expired = make_scheduler(clock)
    stale = make_part(OTP, valid_until=EPOCH + 5)
    fresh = make_part(OTP, valid_until=EPOCH + 50)
    scheduler.put_many([stale, fresh])
    clock.now += 5
    assert take(scheduler) is fresh
    assert expired == [stale]
    assert take(scheduler) is None
    assert queues.pending() == 0


def test_deferred_beyond_validity_expires_at_valid_until() -> None:
    clock = FakeClock()
    scheduler, _, expired = make_scheduler(clock)
    part = make_part(MARKETING, valid_until=EPOCH + 60)
    scheduler.defer(part, EPOCH + 12 * 3600)  # quiet hours end after its validity
    clock.now += 59
    assert take(scheduler) is None and not expired
    clock.now += 1
    assert take(scheduler) is None
    assert expired == [part]
    assert scheduler.deferred_count() == 0


# --- waiting: cancel-safety and wake-ups ---------------------------------------------------


async def test_cancelled_get_loses_nothing() -> None:
    scheduler, _, _ = make_scheduler()
    got: list[OutboundPart] = []

    async def waiter(scope: trio.CancelScope) -> None:
        with scope:
            got.append(await scheduler.get("operator-a"))

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        nursery.start_soon(waiter, scope)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
    assert got == []
    part = make_part(MARKETING)
    scheduler.put(part)
    assert take(scheduler) is part


async def test_get_cancelled_as_a_part_arrives_keeps_it_somewhere() -> None:
    scheduler, queues, _ = make_scheduler()
    got: list[OutboundPart] = []

    async def waiter(scope: trio.CancelScope) -> None:
        with scope:
            got.append(await scheduler.get("operator-a"))

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        nursery.start_soon(waiter, scope)
        await trio.testing.wait_all_tasks_blocked()
        scheduler.put(make_part(MARKETING))  # wakes the waiter...
        scope.cancel()  # ...and cancels it before it runs
    assert len(got) + queues.pending() == 1


async def test_get_wakes_on_put() -> None:
    scheduler, _, _ = make_scheduler()
    part = make_part(OTP, "operator-b")
    async with trio.open_nursery() as nursery:

        async def later() -> None:
            await trio.testing.wait_all_tasks_blocked()
            scheduler.put(make_part(OTP, "operator-a"))  # another route: no wake for us
            await trio.testing.wait_all_tasks_blocked()
            scheduler.put(part)

        nursery.start_soon(later)
        with trio.fail_after(5):
            out = await scheduler.get("operator-b")
    assert out.part_id is part


async def test_deferred_part_wakes_a_waiting_get(autojump_clock: trio.testing.MockClock) -> None:
    def wall() -> float:
        return EPOCH + trio.current_time()

    scheduler = Scheduler(
        ClassQueues(), build, min_shares={}, clock=wall, on_expired=lambda part: None
    )
    late, early = make_part(MARKETING), make_part(OTP)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(scheduler.run)
        scheduler.defer(late, wall() + 100)
        await trio.testing.wait_all_tasks_blocked()  # run() now sleeps until +100
        scheduler.defer(early, wall() + 30)  # earlier: run() must wake and re-sleep
        with trio.fail_after(1000):
            first = await scheduler.get("operator-a")
            assert first.part_id is early
            assert trio.current_time() - start == pytest.approx(30)
            second = await scheduler.get("operator-a")
            assert second.part_id is late
            assert trio.current_time() - start == pytest.approx(100)
        nursery.cancel_scope.cancel()


async def test_retry_delay_wakes_a_waiting_get(autojump_clock: trio.testing.MockClock) -> None:
    def wall() -> float:
        return EPOCH + trio.current_time()

    scheduler = Scheduler(
        ClassQueues(), build, min_shares={}, clock=wall, on_expired=lambda part: None
    )
    part = make_part(TRANSACTIONAL)
    scheduler.put(part)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(scheduler.run)
        out = await scheduler.get("operator-a")
        start = trio.current_time()
        assert out.part_id is part
        scheduler.retry(part, 7.5, wall())
        with trio.fail_after(100):
            again = await scheduler.get("operator-a")
        assert again.part_id is part
        assert trio.current_time() - start == pytest.approx(7.5)
        nursery.cancel_scope.cancel()


# --- memory ---------------------------------------------------------------------------------


def test_queued_part_has_no_dict() -> None:
    part = make_part(MARKETING, "operator-" + "a")
    assert not hasattr(part, "__dict__")
    assert part.route is make_part(OTP, "".join(["operator", "-a"])).route  # interned


def test_memory_per_queued_message_is_under_a_kibibyte() -> None:
    figures = measure(100_000)
    assert 0 < figures["bytes_per_queued_message"] <= 1024
