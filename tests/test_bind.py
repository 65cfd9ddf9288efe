"""One bind against the SMSC simulator (or a scripted raw SMSC) over real TCP on loopback.

Each test runs under ``trio.fail_after`` on trio's real clock and waits for conditions (bind
state changes, the work queue running dry), never for time. Timeouts and backoffs are scaled
down (``FAST``) so that failure paths take milliseconds.
"""

from __future__ import annotations

import logging
import ssl
import struct
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from gateway.binds import BindSupervisor
from gateway.bindstate import BindMode, BindState, FailureKind, RouteSettings
from gateway.parts import RetryReason
from gateway.simulator import MoMessage, SimulatorHandle, SimulatorSettings, serve_simulator
from gateway.workqueue import WorkQueue
from protocols.constants import CommandStatus, EsmClass
from protocols.pdu import (
    DataSm,
    DeliverSm,
    EnquireLink,
    GenericNack,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    response_for,
)

from .bind_helpers import RawSmsc, accepted_counts, make_parts, route, running, serve_raw

TIMEOUT = 15  # seconds for a whole test: generous, CI machines are shared


@pytest.mark.parametrize("mode", list(BindMode))
async def test_bind_and_unbind_in_each_mode(mode: BindMode) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(lambda port: [route("a", port, bind_mode=mode)]) as h:
            bind = h.bind("a")
            await h.supervisor.wait_for(lambda: bind.state is BindState.BOUND)
            assert bind.is_up is mode.transmits
            assert h.supervisor.is_up("a") is mode.transmits
            if mode.transmits:
                h.queue.put_many(make_parts("a", 5))
                await h.queue.wait_idle()
                assert h.queue.counts["submitted"] == 5
        assert [b.mode for b in h.sim.binds] == [mode.value]
        assert h.sim.stats.unbinds == 1  # a graceful unbind, not a dropped connection
        assert bind.state is BindState.STOPPED
        assert bind.last_failure is None


async def test_window_is_never_exceeded() -> None:
    window = 8
    sim_settings = SimulatorSettings(max_window=window, response_delay_s=0.01)
    with trio.fail_after(TIMEOUT):
        async with running(
            lambda port: [route("a", port, binds=2, window=window)], sim_settings
        ) as h:
            await h.supervisor.wait_until_up("a", binds=2)
            h.queue.put_many(make_parts("a", 400))
            await h.queue.wait_idle()
    assert h.sim.stats.window_violations == 0
    assert h.sim.stats.max_unanswered == window  # the window was used, and never exceeded
    assert all(b.counters.max_in_flight == window for b in h.supervisor.stats().binds)
    assert accepted_counts(h.sim) == {i: 1 for i in range(400)}


async def test_tps_is_respected_over_seconds() -> None:
    tps, binds, count = 50.0, 2, 260
    with trio.fail_after(TIMEOUT):
        async with running(lambda port: [route("a", port, binds=binds, tps=tps)]) as h:
            await h.supervisor.wait_until_up("a", binds=binds)
            h.queue.put_many(make_parts("a", count))
            await h.queue.wait_idle()
    times = sorted(r["time"] for r in h.sim.submitted)
    assert len(times) == count
    burst = binds * tps * 0.05  # each bucket starts full: 50 ms of tps
    elapsed = times[-1] - times[0]
    assert elapsed >= 2.0  # measured over seconds, not one call
    rate = (count - burst) / elapsed
    assert 0.8 * binds * tps <= rate <= 1.1 * binds * tps, rate


async def test_throttling_slows_down_and_loses_nothing() -> None:
    count = 80
    sim_settings = SimulatorSettings(tps_limit=40.0)
    settings = {
        "tps": 100.0,
        "throttle_hold_s": 0.2,
        "throttle_increase_interval_s": 0.1,
        "throttle_increase_step": 0.05,
    }
    with trio.fail_after(TIMEOUT):
        async with running(lambda port: [route("a", port, **settings)], sim_settings) as h:
            await h.supervisor.wait_until_up("a")
            h.queue.put_many(make_parts("a", count))
            await h.queue.wait_idle()
    bind = h.supervisor.stats().binds[0]
    # Every message reached the SMSC exactly once as accepted; the throttled tries are extra.
    assert accepted_counts(h.sim) == {i: 1 for i in range(count)}
    assert h.queue.counts["submitted"] == count
    throttled = h.sim.stats.throttled
    assert throttled > 0
    assert bind.counters.throttled == throttled
    assert h.queue.counts["retried:throttled"] == throttled
    assert throttled < 2 * count  # slowed down, not a tight retry loop
    # The rate was cut at once and climbed back while not throttled.
    assert bind.counters.rate_decreases >= 1
    assert bind.counters.rate_increases >= 1
    assert bind.lowest_rate is not None and bind.lowest_rate <= 50.0


async def test_connection_dropped_mid_window_resends_with_bounded_duplicates() -> None:
    window, count = 10, 150
    sim_settings = SimulatorSettings(drop_after_pdus=40, response_delay_s=0.005)
    with trio.fail_after(TIMEOUT):
        async with running(lambda port: [route("a", port, window=window)], sim_settings) as h:
            await h.supervisor.wait_until_up("a")
            h.queue.put_many(make_parts("a", count))
            await h.queue.wait_idle()
    accepted = accepted_counts(h.sim)
    assert set(accepted) == set(range(count))  # every message delivered at least once
    drops = h.sim.stats.dropped_connections
    assert drops >= 2
    duplicates = sum(n - 1 for n in accepted.values())
    assert duplicates <= window * drops
    bind = h.supervisor.stats().binds[0]
    assert bind.counters.reconnects >= drops
    assert bind.counters.duplicates_risk >= duplicates
    assert h.queue.counts["submitted"] == count


async def test_dead_peer_is_detected_and_replaced() -> None:
    sim_settings = SimulatorSettings(stop_answering_enquire_link=True)
    settings = {"enquire_link_interval_s": 0.1, "response_timeout_s": 0.2}
    with trio.fail_after(TIMEOUT):
        async with running(lambda port: [route("a", port, **settings)], sim_settings) as h:
            bind = h.bind("a")
            await h.supervisor.wait_until_up("a")
            first_bound = trio.current_time()
            await h.supervisor.wait_for(
                lambda: bind.counters.peer_dead >= 1 and bind.state is BindState.BOUND
            )
            # Idle interval + response timeout, plus slack for a loaded machine.
            assert trio.current_time() - first_bound < 3.0
            assert bind.last_failure is not None
            assert bind.last_failure.kind is FailureKind.PEER_DEAD
            assert bind.counters.connects >= 2
    assert h.sim.stats.enquire_links_ignored >= 1


async def test_bad_password_is_classified_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(TIMEOUT):
        async with running(lambda port: [route("a", port, password="hunter2x")]) as h:
            bind = h.bind("a")
            await h.supervisor.wait_for(lambda: bind.counters.bind_failures >= 2)
            failure = bind.last_failure
            assert failure is not None
            assert failure.kind is FailureKind.BAD_CREDENTIALS
            assert failure.command_status == CommandStatus.ESME_RINVPASWD
            assert not h.supervisor.is_up("a")
    assert h.sim.stats.bind_failures >= 2
    assert "hunter2" not in caplog.text
    assert "hunter2" not in repr(h.supervisor.pools["a"].settings)
    assert "bad_credentials" in caplog.text


async def test_smsc_refusing_extra_binds_leaves_one_up() -> None:
    sim_settings = SimulatorSettings(max_binds_per_account=1)
    with trio.fail_after(TIMEOUT):
        async with running(lambda port: [route("a", port, binds=2)], sim_settings) as h:
            binds = h.supervisor.pools["a"].binds

            def one_up_one_refused() -> bool:
                refused = [
                    b
                    for b in binds
                    if b.last_failure is not None
                    and b.last_failure.kind is FailureKind.ALREADY_BOUND
                ]
                return sum(b.is_up for b in binds) == 1 and len(refused) == 1

            await h.supervisor.wait_for(one_up_one_refused)
            h.queue.put_many(make_parts("a", 20))
            await h.queue.wait_idle()  # traffic flows through the bind that is up
    assert h.queue.counts["submitted"] == 20


async def test_receipts_and_mo_reach_the_sink_before_the_resp() -> None:
    mo = (
        MoMessage(source_addr="905551112233", destination_addr="ULAK", text="merhaba"),
        MoMessage(source_addr="905551112244", destination_addr="ULAK", text="STOP"),
    )
    count = 30

    class Checking(WorkQueue):
        """Checks on entry that no response for this deliver_sm has reached the SMSC."""

        def __init__(self) -> None:
            super().__init__()
            self.sim: SimulatorHandle | None = None
            self.completed = 0
            self.all_in = trio.Event()

        async def on_deliver(self, pdu: DeliverSm | DataSm, bind_name: str) -> int:
            assert self.sim is not None
            stats = self.sim.stats
            assert stats.deliver_sm_resp_ok + stats.deliver_sm_resp_errors <= self.completed
            await trio.sleep(0)  # let everything else run: the resp must still wait for us
            status = await super().on_deliver(pdu, bind_name)
            if isinstance(pdu, DeliverSm) and pdu.short_message == b"STOP":
                status = CommandStatus.ESME_RX_P_APPN
            self.completed += 1
            if self.completed == count + len(mo):
                self.all_in.set()
            return status

    queue = Checking()
    with trio.fail_after(TIMEOUT):
        async with running(
            lambda port: [route("a", port)], SimulatorSettings(mo_messages=mo), queue=queue
        ) as h:
            queue.sim = h.sim
            await h.supervisor.wait_until_up("a")
            h.queue.put_many(make_parts("a", count, registered_delivery=1))
            await queue.all_in.wait()
    # The graceful unbind went out after every deliver_sm_resp: the SMSC has seen them all.
    assert h.sim.stats.receipts_sent == count
    assert h.sim.stats.mo_sent == len(mo)
    assert h.sim.stats.deliver_sm_resp_ok == count + 1
    assert h.sim.stats.deliver_sm_resp_errors == 1  # the status on_deliver chose
    bind = h.supervisor.stats().binds[0]
    assert bind.counters.delivers == count + len(mo)
    assert bind.counters.deliver_errors == 1


async def test_receipts_taken_at_once_are_answered_per_commit() -> None:
    """The reader's quick path (sink.deliver_now): each receipt's answer waits for its commit
    ticket, answers go out as commits come, and MO messages still go through on_deliver."""
    mo = (MoMessage(source_addr="905551112233", destination_addr="ULAK", text="merhaba"),)
    count = 20

    class Committing(WorkQueue):
        """Takes receipts at once, under ticket 1, 2, 3...; commits when the test says."""

        def __init__(self) -> None:
            super().__init__()
            self.taken = 0
            self.slow = 0
            self.committed = 0
            self._changed = trio.Event()

        def deliver_now(self, pdu: DeliverSm | DataSm, bind_name: str) -> tuple[int, int] | None:
            if pdu.esm_class & EsmClass.TYPE_MASK != EsmClass.TYPE_SMSC_DELIVERY_RECEIPT:
                return None
            self.taken += 1
            return 0, self.taken

        async def wait_committed(self, ticket: int) -> None:
            while self.committed < ticket:
                self._changed = trio.Event()
                await self._changed.wait()

        def commit_through(self, ticket: int) -> None:
            self.committed = ticket
            self._changed.set()

        async def on_deliver(self, pdu: DeliverSm | DataSm, bind_name: str) -> int:
            self.slow += 1
            return await super().on_deliver(pdu, bind_name)

    queue = Committing()
    with trio.fail_after(TIMEOUT):
        async with running(
            lambda port: [route("a", port)], SimulatorSettings(mo_messages=mo), queue=queue
        ) as h:
            stats = h.sim.stats
            await h.supervisor.wait_until_up("a")
            h.queue.put_many(make_parts("a", count, registered_delivery=1))
            while queue.taken < count or stats.deliver_sm_resp_ok < len(mo):
                await trio.sleep(0.01)
            await trio.sleep(0.05)  # time enough for a wrong answer to reach the SMSC
            assert queue.slow == len(mo)  # the MO went to on_deliver, and was answered
            assert stats.deliver_sm_resp_ok == len(mo)  # no receipt answered before its commit
            queue.commit_through(count // 2)
            while stats.deliver_sm_resp_ok < len(mo) + count // 2:
                await trio.sleep(0.01)
            await trio.sleep(0.05)
            assert stats.deliver_sm_resp_ok == len(mo) + count // 2  # not one past the ticket
            queue.commit_through(count)
    # The graceful unbind waited for the rest of the answers.
    assert stats.deliver_sm_resp_ok == count + len(mo)
    assert h.supervisor.stats().binds[0].counters.delivers == count + len(mo)


# --- a scripted SMSC: garbage, generic_nack, timeouts ------------------------------------------


async def _answer_until_eof(smsc: RawSmsc, seen: list[object]) -> None:
    """Answer enquire_link, submit_sm and unbind like a plain SMSC until EOF; record PDUs."""
    ids = iter(range(1, 1_000_000))
    while (pdu := await smsc.recv()) is not None:
        seen.append(pdu)
        if isinstance(pdu, SubmitSm):
            await smsc.send(
                SubmitSmResp(sequence_number=pdu.sequence_number, message_id=f"{next(ids):x}")
            )
        elif isinstance(pdu, (EnquireLink, Unbind)):
            await smsc.send(response_for(pdu))


@pytest.mark.parametrize("before_bind_resp", [False, True])
async def test_garbage_from_smsc_replaces_the_connection(before_bind_resp: bool) -> None:
    seen: list[list[object]] = []

    async def garbage(smsc: RawSmsc) -> None:
        bind = await smsc.recv()
        assert bind is not None
        # command_length 5 < 16: the stream can no longer be framed (SMPP 3.4 §3.2).
        junk = struct.pack(">IIII", 5, 0x00000004, 0, 1)
        if before_bind_resp:
            await smsc.send(junk)
        else:
            await smsc.send(response_for(bind), junk)
        got: list[object] = []
        seen.append(got)
        while (pdu := await smsc.recv()) is not None:
            got.append(pdu)

    with trio.fail_after(TIMEOUT):
        async with (
            serve_raw(garbage) as (port, connections),
            running(lambda _: [route("a", port)]) as h,
        ):
            bind = h.bind("a")
            await h.supervisor.wait_for(lambda: len(connections) >= 3)
            failure = bind.last_failure
            assert failure is not None
            assert failure.kind is FailureKind.PROTOCOL_ERROR
            assert bind.counters.protocol_errors >= 2
    # The gateway answered the unreadable PDU with generic_nack ESME_RINVCMDLEN, then closed.
    first = seen[0]
    assert isinstance(first[0], GenericNack)
    assert first[0].command_status == CommandStatus.ESME_RINVCMDLEN


async def test_bind_answered_by_generic_nack_is_a_refused_bind() -> None:
    async def nack_bind(smsc: RawSmsc) -> None:
        bind = await smsc.recv()
        assert bind is not None
        nack = GenericNack(
            sequence_number=bind.sequence_number, command_status=CommandStatus.ESME_RINVCMDID
        )
        await smsc.send(nack)
        await smsc.recv()

    with trio.fail_after(TIMEOUT):
        async with (
            serve_raw(nack_bind) as (port, _),
            running(lambda _: [route("a", port)]) as h,
        ):
            bind = h.bind("a")
            await h.supervisor.wait_for(lambda: bind.counters.bind_failures >= 2)
            failure = bind.last_failure
            assert failure is not None
            assert failure.kind is FailureKind.BIND_REFUSED
            assert failure.command_status == CommandStatus.ESME_RINVCMDID


async def test_generic_nack_and_malformed_pdus_keep_the_connection() -> None:
    seen: list[object] = []

    async def nacky(smsc: RawSmsc) -> None:
        bind = await smsc.recv()
        assert bind is not None
        await smsc.send(
            response_for(bind),
            # A nack with sequence 0: the SMSC could not read some header of ours (§4.3).
            GenericNack(sequence_number=0, command_status=CommandStatus.ESME_RINVCMDLEN),
            # A well-framed PDU with an unknown command_id: malformed, answered, not fatal.
            struct.pack(">IIII", 16, 0x00000999, 0, 77),
        )
        submit = await smsc.recv()
        while not isinstance(submit, SubmitSm):
            assert submit is not None
            seen.append(submit)
            submit = await smsc.recv()
        nack = GenericNack(
            sequence_number=submit.sequence_number, command_status=CommandStatus.ESME_RSYSERR
        )
        await smsc.send(nack)
        await _answer_until_eof(smsc, seen)

    with trio.fail_after(TIMEOUT):
        async with (
            serve_raw(nacky) as (port, connections),
            running(lambda _: [route("a", port)]) as h,
        ):
            await h.supervisor.wait_until_up("a")
            h.queue.put_many(make_parts("a", 1))
            await h.queue.wait_idle()
    bind = h.supervisor.stats().binds[0]
    assert len(connections) == 1  # the connection was kept
    assert bind.counters.connects == 1
    assert bind.counters.malformed == 1
    assert bind.counters.generic_nacks == 2  # the unsolicited one and the submit's
    assert [r.reason for r in h.queue.retries] == [RetryReason.TRANSIENT_ERROR]
    assert h.queue.counts["submitted"] == 1
    answers = [p for p in seen if isinstance(p, GenericNack)]
    assert [(p.sequence_number, p.command_status) for p in answers] == [
        (77, CommandStatus.ESME_RINVCMDID)
    ]


async def test_response_timeout_retries_and_counts_the_duplicate_risk() -> None:
    seen: list[object] = []

    async def slow_first(smsc: RawSmsc) -> None:
        bind = await smsc.recv()
        assert bind is not None
        await smsc.send(response_for(bind))
        first = await smsc.recv()  # never answered in time
        retry = await smsc.recv()
        assert isinstance(first, SubmitSm) and isinstance(retry, SubmitSm)
        await smsc.send(
            SubmitSmResp(sequence_number=retry.sequence_number, message_id="b2"),
            SubmitSmResp(sequence_number=first.sequence_number, message_id="b1"),  # too late
        )
        await _answer_until_eof(smsc, seen)

    with trio.fail_after(TIMEOUT):
        async with (
            serve_raw(slow_first) as (port, _),
            running(lambda _: [route("a", port, response_timeout_s=0.2)]) as h,
        ):
            bind = h.bind("a")
            await h.supervisor.wait_until_up("a")
            h.queue.put_many(make_parts("a", 1))
            await h.queue.wait_idle()
    # The late response came before the unbind_resp, so it was seen before the bind stopped.
    counters = h.supervisor.stats().binds[0].counters
    assert counters.timeouts == 1
    assert counters.duplicates_risk == 1
    assert counters.late_responses == 1
    assert [r.reason for r in h.queue.retries] == [RetryReason.TIMEOUT]
    assert [s.message_id for s in h.queue.submissions[0]] == ["b2"]
    assert bind.state is BindState.STOPPED


async def test_smsc_unbind_drains_then_the_bind_reconnects() -> None:
    answers: list[object] = []

    async def unbinding(smsc: RawSmsc) -> None:
        bind = await smsc.recv()
        assert bind is not None
        await smsc.send(response_for(bind))
        if answers:  # the second connection: behave
            await _answer_until_eof(smsc, [])
            return
        submit = await smsc.recv()
        assert isinstance(submit, SubmitSm)
        # Unbind while the submit is outstanding: the gateway must drain, then answer.
        await smsc.send(Unbind())
        await smsc.send(SubmitSmResp(sequence_number=submit.sequence_number, message_id="c1"))
        while (pdu := await smsc.recv()) is not None:
            answers.append(pdu)

    with trio.fail_after(TIMEOUT):
        async with (
            serve_raw(unbinding) as (port, connections),
            running(lambda _: [route("a", port)]) as h,
        ):
            bind = h.bind("a")
            await h.supervisor.wait_until_up("a")
            h.queue.put_many(make_parts("a", 1))
            await h.queue.wait_idle()
            await h.supervisor.wait_for(lambda: len(connections) == 2 and bind.is_up)
            assert bind.last_failure is not None
            assert bind.last_failure.kind is FailureKind.UNBOUND_BY_PEER
    assert [type(p).__name__ for p in answers] == ["UnbindResp"]
    assert [s.message_id for s in h.queue.submissions[0]] == ["c1"]
    assert not h.queue.retries


async def test_enquire_link_from_the_smsc_is_answered() -> None:
    answers: list[object] = []

    async def pinging(smsc: RawSmsc) -> None:
        bind = await smsc.recv()
        assert bind is not None
        await smsc.send(response_for(bind), EnquireLink())
        answers.append(await smsc.recv())
        await _answer_until_eof(smsc, [])

    with trio.fail_after(TIMEOUT):
        async with (
            serve_raw(pinging) as (port, _),
            running(lambda _: [route("a", port)]) as h,
        ):
            await h.supervisor.wait_until_up("a")
    assert [type(p).__name__ for p in answers] == ["EnquireLinkResp"]


async def test_cancelled_with_messages_in_flight_returns_them_and_says_goodbye() -> None:
    """Not a graceful shutdown: the daemon's scope is cancelled (a second Ctrl-C, the hard
    deadline). Outstanding parts still go back to the queue, and a shielded unbind goes out."""
    seen: list[object] = []
    count = 5
    all_sent, goodbye = trio.Event(), trio.Event()

    async def silent(smsc: RawSmsc) -> None:
        bind = await smsc.recv()
        assert bind is not None
        await smsc.send(response_for(bind))
        while (pdu := await smsc.recv()) is not None:  # never answers a submit_sm
            seen.append(pdu)
            if len(seen) == count:
                all_sent.set()
            if isinstance(pdu, Unbind):
                goodbye.set()

    queue = WorkQueue()
    with trio.fail_after(TIMEOUT):
        async with serve_raw(silent) as (port, _):
            sup = BindSupervisor([route("a", port)], queue, queue, strict=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                await sup.wait_until_up("a")
                queue.put_many(make_parts("a", count))
                await all_sent.wait()
                nursery.cancel_scope.cancel()
            await goodbye.wait()  # the shielded unbind reached the server
    assert queue.taken_unresolved == 0
    assert queue.pending("a") == count
    assert {r.reason for r in queue.retries} == {RetryReason.CONNECTION_LOST}
    assert sup.stats().totals.duplicates_risk == count
    assert [type(p).__name__ for p in seen] == ["SubmitSm"] * count + ["Unbind"]


# --- TLS ---------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:  # pragma: no cover
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return cert, key


async def test_tls_bind_through_a_terminating_proxy(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            sim: SimulatorHandle = await nursery.start(serve_simulator, SimulatorSettings())

            async def proxy(tls: trio.SSLStream[trio.SocketStream]) -> None:
                plain = await trio.open_tcp_stream("127.0.0.1", sim.port)
                async with plain, tls:

                    async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
                        try:
                            while data := await src.receive_some(65536):
                                await dst.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                        inner.cancel_scope.cancel()

                    async with trio.open_nursery() as inner:
                        inner.start_soon(pump, tls, plain)
                        inner.start_soon(pump, plain, tls)

            listeners = await nursery.start(
                partial(trio.serve_ssl_over_tcp, proxy, 0, server_context, host="127.0.0.1")
            )
            port = listeners[0].transport_listener.socket.getsockname()[1]
            trusting = ssl.create_default_context(cafile=str(cert))
            routes = [
                route(
                    "good",
                    port,
                    tls=True,
                    tls_context=trusting,
                    prefixes=("+90",),
                    tls_server_hostname="localhost",
                ),
                route("bad", port, tls=True, tls_server_hostname="localhost", prefixes=("+44",)),
            ]
            async with running(lambda _: routes) as h:
                await h.supervisor.wait_until_up("good")
                h.queue.put_many(make_parts("good", 5))
                await h.queue.wait_idle()
                bad = h.bind("bad")
                await h.supervisor.wait_for(lambda: bad.last_failure is not None)
                assert bad.last_failure is not None
                assert bad.last_failure.kind is FailureKind.TLS  # untrusted certificate
            nursery.cancel_scope.cancel()
    assert h.queue.counts["submitted"] == 5
    assert len(sim.submitted) == 5


def test_route_settings_validation() -> None:
    with pytest.raises(ValueError, match="window"):
        RouteSettings(name="a", host="h", port=1, system_id="s", window=0)
    with pytest.raises(ValueError, match="tps"):
        RouteSettings(name="a", host="h", port=1, system_id="s", tps=0)
    with pytest.raises(ValueError, match="password longer than 8") as info:
        RouteSettings(name="a", host="h", port=1, system_id="s", password="123456789")
    assert "123456789" not in str(info.value)
