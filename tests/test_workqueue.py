"""The in-memory work queue: FIFO per route, deferred retries, cancel-safe get, outcomes.

No I/O here, so the tests run on pytest-trio's ``autojump_clock``: deferrals of seconds take
no wall time.
"""

from __future__ import annotations

import trio
import trio.testing

from gateway.parts import RetryReason
from gateway.workqueue import WorkQueue
from protocols.pdu import DeliverSm

from .bind_helpers import make_parts

TIMEOUT = 5


async def test_fifo_per_route_and_outcomes() -> None:
    queue = WorkQueue()
    queue.put_many(make_parts("a", 3) + make_parts("b", 2, start=10))
    assert queue.pending() == 5
    assert queue.pending("a") == 3
    with trio.fail_after(TIMEOUT):
        first = await queue.get("a")
    second = queue.get_nowait("a")
    b = queue.get_nowait("b")
    assert (first.part_id, second and second.part_id, b and b.part_id) == (0, 1, 10)
    assert queue.taken_unresolved == 3
    assert set(queue.outstanding) == {0, 1, 10}
    now = trio.current_time()
    queue.on_submitted(first, "abc", "a#1", now)
    assert second is not None and b is not None
    queue.on_rejected(second, 0x45, now)
    queue.on_retry(b, 0.0, RetryReason.CONNECTION_LOST, now)
    assert queue.taken_unresolved == 0
    assert queue.submissions[0][0].message_id == "abc"
    assert queue.rejections == {1: 0x45}
    assert queue.counts["retried:connection_lost"] == 1
    # A retry without delay goes to the front of its route's queue.
    again = queue.get_nowait("b")
    assert again is b


async def test_deferred_retry_comes_back_when_due(autojump_clock: trio.testing.MockClock) -> None:
    queue = WorkQueue()
    queue.put_many(make_parts("a", 1))
    part = queue.get_nowait("a")
    assert part is not None
    start = trio.current_time()
    queue.on_retry(part, 5.0, RetryReason.THROTTLED, start)
    assert queue.get_nowait("a") is None
    assert queue.pending("a") == 1
    with trio.fail_after(TIMEOUT + 5):
        back = await queue.get("a")
    assert back is part
    assert trio.current_time() - start >= 5.0


async def test_waiting_get_wakes_on_put_and_on_earlier_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = WorkQueue()
    got = []

    async def consumer() -> None:
        got.append(await queue.get("a"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        queue.put_many(make_parts("a", 1))
    assert [p.part_id for p in got] == [0]
    # A consumer waiting on an empty route wakes for a retry that becomes due.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        queue.on_retry(got[0], 2.0, RetryReason.THROTTLED, start)
    assert [p.part_id for p in got] == [0, 0]
    assert trio.current_time() - start >= 2.0


async def test_cancelled_get_loses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    queue = WorkQueue()
    with trio.move_on_after(1):
        await queue.get("a")  # nothing there: cancelled while waiting
    queue.put_many(make_parts("a", 1))
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.get("a")  # cancelled before taking: the part stays
    assert queue.pending("a") == 1
    assert queue.get_nowait("a") is not None


async def test_wait_idle_and_deliveries() -> None:
    queue = WorkQueue(deliver_status=0x64)
    queue.put_many(make_parts("a", 2))

    async def worker() -> None:
        while queue.pending("a"):
            part = await queue.get("a")
            queue.on_submitted(part, "x", "a#1", trio.current_time())

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            await queue.wait_idle()
    assert queue.counts["submitted"] == 2
    assert await queue.on_deliver(DeliverSm(short_message=b"hi"), "a#1") == 0x64
    assert queue.deliveries[0].status == 0x64
