"""Group commit, shared by both stores.

Callers hand in write jobs and wait. One writer task takes everything pending (up to
``max_batch`` messages or transitions) and has the store write it as one transaction; only then
are that group's callers woken. Under load this makes one commit (one fsync) serve many calls.

The first write after a quiet spell waits up to ``max_delay_s`` for company (unless it is
urgent); writes that queue during a commit go with the next one at once. A caller cancelled
while it waits leaves its job queued: it is committed all the same, and the writer never
depends on a caller still listening.

Jobs wait in three lanes (:func:`lane_of` by default):

- ``FIRST``: what a person or an OTP waits for (an OTP accept, consent, OTP and TOTP records).
  These go in a transaction of their own, ahead of everything, so they wait at most for the
  transaction already running, never for a big group. A store may do better and write them
  into the transaction already running, just before its commit (:meth:`GroupCommit.join_waiting`,
  called from the writer's thread): then they wait for that one commit and no other. It may
  even commit early: in the middle of a long group of transitions, commit what is written
  with them (:meth:`GroupCommit.take_first`, :meth:`GroupCommit.finish_soon`) and go on in a
  new transaction. A store whose database runs transactions side by side (PostgreSQL) does
  better still with ``first_apart``: a writer of their own commits them beside the group
  being written, so they wait for no other transaction at all.
- ``URGENT``: status transitions (a bind's window slot or an SMSC's receipt waits for them),
  and the early receipts held for a later match.
  A store that joins first-lane jobs into the running transaction joins these too, except
  into a first-lane group: an OTP's own transaction stays small.
- ``BULK``: batch accepts, which fill the rest of a group.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import trio

from queues.model import (
    AcceptResult,
    ConsentRecord,
    MessageClass,
    NewMessage,
    OtpRecord,
    Transition,
)
from queues.store import HeldReceipt, StoreClosedError, StoredWebhook, TotpEnrollment

__all__ = [
    "BULK",
    "FIRST",
    "URGENT",
    "GroupCommit",
    "GroupCommitWrites",
    "JobKind",
    "WriteJob",
    "lane_of",
    "runs_of_kind",
    "share_outcomes",
]

logger = logging.getLogger(__name__)

JobKind = Literal[
    "accept",
    "record",
    "consent",
    "otp_put",
    "otp_update",
    "totp_put",
    "hold",
    "drop_held",
    "hooks_put",
    "hooks_drop",
]

FIRST, URGENT, BULK = 0, 1, 2


@dataclass(eq=False, slots=True)
class WriteJob:
    """One caller's write, waiting for the commit that holds it."""

    kind: JobKind
    size: int
    messages: Sequence[NewMessage] = ()
    transitions: Sequence[Transition] = ()
    consent: ConsentRecord | None = None
    otp: OtpRecord | None = None
    totp: TotpEnrollment | None = None
    held: HeldReceipt | None = None
    drop_held: tuple[tuple[str, ...], float] | None = None
    """The ids and the cut-off time of a ``drop_held`` job."""
    again: bool = False
    """A ``record`` job's transitions may be stored already (see ``Store.record``)."""
    hooks: Sequence[StoredWebhook] = ()
    hook_ids: Sequence[str] = ()
    """The event ids of a ``hooks_drop`` job."""
    done: trio.Event = field(default_factory=trio.Event)
    results: list[AcceptResult] = field(default_factory=list)
    error: BaseException | None = None
    on_committed: Callable[[], None] | None = None
    """Called in the writer task as soon as the job is committed, before its caller resumes
    (see :meth:`queues.store.Store.record`)."""


class GroupCommit:
    """The queue of pending writes and the writer loop (:meth:`run`, a background task).

    Args:
        write_group: writes a group in one transaction (setting each job's ``results`` or
            ``error``); an exception it raises fails the whole group.
        name: for the log ("SQLite", "PostgreSQL").
        failure: the error a job gets when ``write_group`` raises.
        catch: what the writer catches from ``write_group`` (it must outlive any one group).
        lane: which lane a job waits in (:data:`FIRST`, :data:`URGENT` or :data:`BULK`).
        first_apart: write the first lane on a second writer, concurrently with the groups of
            the other two (for a store that can run two transactions at once; jobs of one lane
            still commit in order).
    """

    def __init__(
        self,
        write_group: Callable[[list[WriteJob]], Awaitable[None]],
        *,
        max_batch: int,
        max_delay_s: float,
        name: str,
        failure: Callable[[BaseException], BaseException],
        catch: tuple[type[BaseException], ...] = (Exception,),
        lane: Callable[[WriteJob], int] | None = None,
        first_apart: bool = False,
    ) -> None:
        self._write_group = write_group
        self._max_batch = max_batch
        self._max_delay = max_delay_s
        self._name = name
        self._failure = failure
        self._catch = catch
        self._lane = lane or lane_of
        self._lanes: tuple[collections.deque[WriteJob], ...] = tuple(
            collections.deque() for _ in (FIRST, URGENT, BULK)
        )
        self._pending_size = 0
        self._first_apart = first_apart
        # Writer 0 serves every lane, or URGENT and BULK when writer 1 serves FIRST apart.
        self._wake_of = (1, 0, 0) if first_apart else (0, 0, 0)
        self._wakes = [trio.Event(), trio.Event()]
        self._full = trio.Event()
        self._stopped = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self.closing = False
        #: ``time.monotonic()`` of the last first-lane job submitted (read by a store that
        #: looks for them more often while they come: see ``SQLiteStore._write_records``).
        self.first_at = -math.inf

    async def submit(self, job: WriteJob) -> WriteJob:
        """Queue ``job`` and return it once committed (or raise its error)."""
        if self.closing:
            raise StoreClosedError("the store is closed")
        lane = self._lane(job)
        if lane == FIRST:
            self.first_at = time.monotonic()
        self._lanes[lane].append(job)
        self._pending_size += job.size
        self._wakes[self._wake_of[lane]].set()
        if self._pending_size >= self._max_batch:
            self._full.set()
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job

    def join_waiting(self, group: list[WriteJob]) -> list[WriteJob]:
        """Move the waiting ``FIRST`` and ``URGENT`` jobs into ``group``, the group being
        written, and return them; the store writes them in the same transaction, before its
        commit. An OTP accept, a window's submissions or a receipt then waits for this commit
        alone, not for it and one more of its own (behind a batch accept of a thousand
        messages that was twice the wait), and there is one commit fewer. A group of
        first-lane jobs takes only first-lane jobs: under load the urgent lane holds hundreds
        of transitions, milliseconds of writing that an OTP's commit would wait for.

        Thread-safe against :meth:`submit` (a deque's ``append`` and ``popleft`` are atomic):
        a store's writer thread calls it while the trio thread goes on queueing. The joined
        jobs are woken with the group, and fail with it; their size leaves the pending count
        when the group returns (:meth:`run`, in the trio thread).
        """
        joined: list[WriteJob] = []
        lanes = self._lanes[:1] if self._lane(group[0]) == FIRST else self._lanes[:2]
        for lane in lanes:
            joined.extend(_drained(lane))
        group.extend(joined)
        return joined

    async def close(self) -> None:
        """Refuse new writes, commit what is pending, and wait for the writer to stop."""
        self.closing = True
        for wake in self._wakes:
            wake.set()
        self._full.set()
        await self._stopped.wait()

    async def run(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        try:
            if self._first_apart:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, 1, (FIRST,))
                    await self._writer(0, (URGENT, BULK))
            else:
                await self._writer(0, (FIRST, URGENT, BULK))
        finally:
            self._stopped.set()

    async def _writer(self, index: int, lanes: tuple[int, ...]) -> None:
        """Write groups from ``lanes`` until closed and empty; woken by ``_wakes[index]``."""
        mine = [self._lanes[lane] for lane in lanes]
        prompt = [self._lanes[lane] for lane in lanes if lane != BULK]
        idle = True
        while True:
            if not any(mine):
                if self.closing:
                    return
                self._wakes[index] = trio.Event()
                await self._wakes[index].wait()
                idle = True
                continue
            if (
                idle
                and not any(prompt)
                and self._max_delay > 0
                and not self.closing
                and self._pending_size < self._max_batch
            ):
                self._full = trio.Event()
                with trio.move_on_after(self._max_delay):
                    await self._full.wait()
            idle = False
            group = self._take_group(lanes)
            taken = len(group)
            try:
                await self._write_group(group)
            except self._catch as exc:
                logger.exception("%s writer group failed", self._name)
                for job in group:
                    job.error = self._failure(exc)
            self._finish(group, taken)

    def _finish(self, jobs: list[WriteJob], counted: int) -> None:
        """Wake the callers of written ``jobs`` and run their ``on_committed``, in the trio
        thread. The first ``counted`` left the pending size when taken; the others (joined
        from the store's thread) leave it now."""
        self._pending_size -= sum(job.size for job in jobs[counted:])
        for job in jobs:
            job.done.set()
            if job.on_committed is not None and job.error is None:
                try:
                    job.on_committed()
                except Exception:  # the caller's bug must not stop the writer
                    logger.exception("%s: on_committed failed", self._name)

    def first_waiting(self) -> bool:
        """Whether a first-lane job waits (thread-safe; see :meth:`take_first`)."""
        return bool(self._lanes[FIRST])

    def take_first(self) -> list[WriteJob]:
        """Take the waiting first-lane jobs, for a store that commits them early, in the
        middle of a long group (thread-safe against :meth:`submit`). The store then either
        commits them and hands them to :meth:`finish_soon`, or gives them back with
        :meth:`give_back_first`."""
        return _drained(self._lanes[FIRST])

    def give_back_first(self, jobs: list[WriteJob]) -> None:
        """Put jobs from :meth:`take_first` back at the head of their lane, in order."""
        self._lanes[FIRST].extendleft(reversed(jobs))

    def finish_soon(self, jobs: list[WriteJob]) -> None:
        """From the store's writer thread: ``jobs`` from :meth:`take_first` are committed;
        the trio thread wakes their callers at its next chance, without waiting for the rest
        of the group being written."""
        assert self._token is not None, "finish_soon outside a running writer"
        self._token.run_sync_soon(self._finish, jobs, 0)

    def _take_group(self, lanes: tuple[int, ...]) -> list[WriteJob]:
        """From ``lanes``: the first lane alone if it has jobs; else the urgent lane, then
        bulk; up to ``max_batch`` (at least one job). Jobs keep their order within a lane;
        across lanes order does not matter, since a transition or OTP update only ever follows
        a commit of its own message."""
        first = self._lanes[FIRST]
        if FIRST in lanes and first:
            chosen: tuple[collections.deque[WriteJob], ...] = (first,)
        else:
            chosen = tuple(self._lanes[lane] for lane in lanes if lane != FIRST)
        group: list[WriteJob] = []
        size = 0
        for lane in chosen:
            while lane:
                job = lane[0]
                if group and size + job.size > self._max_batch:
                    break
                lane.popleft()
                group.append(job)
                size += job.size
        self._pending_size -= size
        return group


def _drained(lane: collections.deque[WriteJob]) -> list[WriteJob]:
    """Every job of ``lane``, taken in order (from the store's writer thread: nothing else
    takes from a lane while a group is being written, and ``append`` is atomic)."""
    taken: list[WriteJob] = []
    while lane:
        taken.append(lane.popleft())
    return taken


def runs_of_kind(jobs: Sequence[WriteJob]) -> Iterator[tuple[JobKind, Sequence[WriteJob]]]:
    """Consecutive jobs of one kind, run by run, in order: a store writes each run as one
    batch (one statement per table), and keeping the order across kinds means a record after
    its accept finds the rows. Record jobs marked ``again`` make runs of their own."""
    i = 0
    while i < len(jobs):
        kind, again = jobs[i].kind, jobs[i].again
        j = i
        while j < len(jobs) and jobs[j].kind == kind and jobs[j].again == again:
            j += 1
        yield kind, jobs[i:j]
        i = j


def share_outcomes(
    run: Sequence[WriteJob],
    outcomes: Sequence[AcceptResult],
    results: dict[int, list[AcceptResult]],
) -> None:
    """Give each accept job of ``run`` its slice of ``outcomes`` (one per message of the run,
    in order), as ``results[id(job)]``."""
    start = 0
    for job in run:
        results[id(job)] = list(outcomes[start : start + len(job.messages)])
        start += len(job.messages)


def lane_of(job: WriteJob) -> int:
    """The default lanes (see the module docstring)."""
    if job.kind in ("record", "hold", "drop_held"):
        return URGENT
    if job.kind == "accept":
        return FIRST if any(m.klass is MessageClass.OTP for m in job.messages) else BULK
    if job.kind in ("hooks_put", "hooks_drop"):
        return BULK  # nothing waits on them but the webhook journal
    return FIRST


class GroupCommitWrites:
    """The write half of :class:`queues.store.Store`, as jobs for a :class:`GroupCommit`."""

    _commit: GroupCommit

    async def accept(self, messages: Sequence[NewMessage]) -> list[AcceptResult]:
        if not messages:
            await trio.lowlevel.checkpoint()
            return []
        job = await self._commit.submit(WriteJob("accept", len(messages), messages=list(messages)))
        return job.results

    async def record(
        self,
        transitions: Sequence[Transition],
        on_committed: Callable[[], None] | None = None,
        *,
        again: bool = False,
    ) -> None:
        if not transitions:
            await trio.lowlevel.checkpoint()
            if on_committed is not None:
                on_committed()
            return
        await self._commit.submit(
            WriteJob(
                "record",
                len(transitions),
                transitions=list(transitions),
                on_committed=on_committed,
                again=again,
            )
        )

    async def set_consent(self, record: ConsentRecord) -> None:
        await self._commit.submit(WriteJob("consent", 1, consent=record))

    async def put_otp(self, record: OtpRecord) -> None:
        await self._commit.submit(WriteJob("otp_put", 1, otp=record))

    async def update_otp(self, record: OtpRecord) -> None:
        await self._commit.submit(WriteJob("otp_update", 1, otp=record))

    async def put_totp(self, record: TotpEnrollment) -> None:
        await self._commit.submit(WriteJob("totp_put", 1, totp=record))

    async def hold_receipt(self, receipt: HeldReceipt) -> None:
        await self._commit.submit(WriteJob("hold", 1, held=receipt))

    async def drop_held_receipts(self, smsc_ids: Sequence[str], received_before: float) -> None:
        job = WriteJob("drop_held", 1, drop_held=(tuple(smsc_ids), received_before))
        await self._commit.submit(job)

    async def put_webhooks(self, hooks: Sequence[StoredWebhook]) -> None:
        if not hooks:
            await trio.lowlevel.checkpoint()
            return
        await self._commit.submit(WriteJob("hooks_put", len(hooks), hooks=list(hooks)))

    async def drop_webhooks(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            await trio.lowlevel.checkpoint()
            return
        await self._commit.submit(WriteJob("hooks_drop", len(event_ids), hook_ids=list(event_ids)))
