"""The group-commit writer's lanes and delay, with a recording ``write_group`` (the stores'
own transactions are tested by the store contract)."""

from __future__ import annotations

import trio
import trio.testing

from queues.group_commit import BULK, FIRST, URGENT, GroupCommit, WriteJob, lane_of
from queues.model import ConsentRecord, MessageClass, Status, Transition
from tests.store_contract import _message


class _Recorder:
    """Records each group's jobs; the first group blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.started = trio.Event()
        self.release = trio.Event()

    async def write(self, group: list[WriteJob]) -> None:
        self.groups.append([_name(job) for job in group])
        if len(self.groups) == 1:
            self.started.set()
            await self.release.wait()


def _name(job: WriteJob) -> str:
    if job.kind == "accept":
        return f"accept:{job.messages[0].text}"
    if job.kind == "record":
        return f"record:{job.transitions[0].message_id}"
    return job.kind


def _accept(text: str, klass: MessageClass = MessageClass.MARKETING, n: int = 1) -> WriteJob:
    return WriteJob("accept", n, messages=[_message("t", text=text, klass=klass)] * n)


def _record(name: str, n: int = 1) -> WriteJob:
    return WriteJob("record", n, transitions=[Transition(name, Status.QUEUED, 0.0)] * n)


def test_lanes() -> None:
    consent = WriteJob("consent", 1, consent=ConsentRecord("t", "+905321234567", True, "api", 0))
    assert lane_of(_accept("otp", MessageClass.OTP)) == FIRST
    assert lane_of(consent) == FIRST
    assert lane_of(_record("m")) == URGENT
    assert lane_of(_accept("bulk")) == BULK
    assert lane_of(_accept("tx", MessageClass.TRANSACTIONAL)) == BULK


async def test_first_lane_goes_alone_then_urgent_then_bulk() -> None:
    recorder = _Recorder()
    commit = GroupCommit(
        recorder.write, max_batch=10, max_delay_s=0.0, name="test", failure=lambda e: e
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit.run)
        nursery.start_soon(commit.submit, _accept("busy"))
        await recorder.started.wait()
        # While the writer is busy: bulk first, then transitions, then an OTP.
        for job in (_accept("b1", n=4), _accept("b2", n=4), _record("r1", 3), _record("r2", 3)):
            nursery.start_soon(commit.submit, job)
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(commit.submit, _accept("otp", MessageClass.OTP))
        await trio.testing.wait_all_tasks_blocked()
        recorder.release.set()
        await commit.close()
    assert recorder.groups == [
        ["accept:busy"],
        ["accept:otp"],  # alone, ahead of everything queued before it
        ["record:r1", "record:r2", "accept:b1"],  # urgent lane first; 3 + 3 + 4 = max_batch
        ["accept:b2"],
    ]


async def test_with_first_apart_an_otp_commits_while_a_group_is_being_written() -> None:
    recorder = _Recorder()
    commit = GroupCommit(
        recorder.write,
        max_batch=10,
        max_delay_s=0.0,
        name="test",
        failure=lambda e: e,
        first_apart=True,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit.run)
        nursery.start_soon(commit.submit, _accept("busy"))
        await recorder.started.wait()  # the bulk group is being written, and stays so
        nursery.start_soon(commit.submit, _record("r1"))
        with trio.fail_after(10):  # a single writer would hold it behind "busy" for good
            otp = await commit.submit(_accept("otp", MessageClass.OTP))
        assert otp.error is None
        consent = WriteJob("consent", 1, consent=ConsentRecord("t", "+905321234567", True, "a", 0))
        await commit.submit(consent)
        assert recorder.groups == [["accept:busy"], ["accept:otp"], ["consent"]]
        recorder.release.set()
        await commit.close()
    assert recorder.groups[3:] == [["record:r1"]]  # the other lanes kept their writer's order


async def test_urgent_work_skips_the_delay_and_bulk_waits_for_company(
    autojump_clock: trio.abc.Clock,
) -> None:
    recorder = _Recorder()
    recorder.release.set()
    commit = GroupCommit(
        recorder.write, max_batch=100, max_delay_s=5.0, name="test", failure=lambda e: e
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await commit.submit(_record("r"))
        assert trio.current_time() - start < 5.0  # the autojump clock would show the wait
        start = trio.current_time()
        await commit.submit(_accept("bulk"))
        assert trio.current_time() - start >= 5.0  # waited for others to join
        await commit.close()
    assert recorder.groups == [["record:r"], ["accept:bulk"]]


async def test_waiting_jobs_joined_into_a_running_group_share_its_fate() -> None:
    """``join_waiting`` (a store's writer thread, before its commit) moves waiting OTP accepts
    and transitions into the group under way, not bulk accepts: they are woken with it, fail
    with it, and leave no pending count behind (the next bulk job still waits for company up
    to max_batch)."""
    outcomes: list[list[str]] = []
    release = trio.Event()
    commit: GroupCommit

    async def write(group: list[WriteJob]) -> None:
        await release.wait()
        joined = commit.join_waiting(group)
        outcomes.append([_name(job) for job in group])
        if any(_name(job) == "accept:bad" for job in group):
            raise RuntimeError("disk full")
        assert all(job in group for job in joined)

    commit = GroupCommit(write, max_batch=10, max_delay_s=0.0, name="test", failure=lambda e: e)
    errors: list[str] = []

    async def submit(job: WriteJob) -> None:
        try:
            await commit.submit(job)
        except RuntimeError as exc:
            errors.append(f"{_name(job)}: {exc}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit.run)
        nursery.start_soon(submit, _accept("bad"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(submit, _accept("otp", MessageClass.OTP))
        nursery.start_soon(submit, _record("r1"))
        nursery.start_soon(submit, _accept("bulk"))
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert commit._pending_size == 0
        await submit(_accept("after", MessageClass.OTP))
        await commit.close()
    assert outcomes == [
        ["accept:bad", "accept:otp", "record:r1"],
        ["accept:bulk"],
        ["accept:after"],
    ]
    assert sorted(errors) == [
        "accept:bad: disk full",
        "accept:otp: disk full",
        "record:r1: disk full",
    ]


async def test_a_first_lane_group_joins_only_first_lane_jobs() -> None:
    """An OTP's own transaction stays small: OTP accepts queued meanwhile join it, but the
    transitions waiting in the urgent lane (hundreds of rows under load, milliseconds of
    writing) wait for the next group rather than holding the OTP's commit back."""
    joined_names: list[list[str]] = []
    release = trio.Event()
    commit: GroupCommit

    async def write(group: list[WriteJob]) -> None:
        if not joined_names:
            await release.wait()
        joined_names.append([_name(job) for job in commit.join_waiting(group)])

    commit = GroupCommit(write, max_batch=10, max_delay_s=0.0, name="test", failure=lambda e: e)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit.run)
        nursery.start_soon(commit.submit, _accept("otp1", MessageClass.OTP))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(commit.submit, _record("r1"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(commit.submit, _accept("otp2", MessageClass.OTP))
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        await commit.close()
    assert joined_names == [["accept:otp2"], []]  # r1 went in a group of its own


async def test_on_committed_runs_in_the_writer_before_the_caller_resumes() -> None:
    """A record's ``on_committed`` is called by the writer task right after the commit (the
    pipeline frees window allowance there, a scheduler round before the caller wakes), and
    never for a group that failed."""
    seen: list[str] = []
    fail = False

    async def write(group: list[WriteJob]) -> None:
        await trio.lowlevel.checkpoint()
        if fail:
            raise RuntimeError("disk full")

    commit = GroupCommit(write, max_batch=10, max_delay_s=0.0, name="test", failure=lambda e: e)

    async def submit(name: str) -> None:
        job = _record(name)
        job.on_committed = lambda: seen.append(f"{name}: committed")
        try:
            await commit.submit(job)
        except RuntimeError:
            seen.append(f"{name}: failed")
        else:
            seen.append(f"{name}: resumed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit.run)
        await submit("a")
        fail = True
        await submit("b")
        await commit.close()
    assert seen == ["a: committed", "a: resumed", "b: failed"]
