"""The bind supervisor: routing with failover, graceful shutdown with messages in flight, stats,
and one bind's bug not taking the others down. Real TCP on loopback against the simulator."""

from __future__ import annotations

import pytest
import trio

from gateway.binds import BindSupervisor
from gateway.bindstate import BindState, FailureKind, RouteSettings
from gateway.parts import OutboundPart, RetryReason
from gateway.router import NoRouteError
from gateway.simulator import SimulatorHandle, SimulatorSettings, serve_simulator
from gateway.workqueue import WorkQueue

from .bind_helpers import accepted_counts, make_parts, route, running

TIMEOUT = 15


async def test_failover_to_the_backup_route_when_all_primary_binds_are_down() -> None:
    def routes(port: int) -> list[RouteSettings]:
        return [
            # The primary's binds are refused (wrong password): the route is down.
            route("opa", port, binds=2, password="wrong", prefixes=("+90",), backup="opb"),
            route("opb", port, prefixes=("+44",)),
        ]

    with trio.fail_after(TIMEOUT):
        async with running(routes) as h:
            sup = h.supervisor
            await sup.wait_until_up("opb")
            opa = sup.pools["opa"].binds
            await sup.wait_for(lambda: all(b.last_failure is not None for b in opa))
            assert not sup.is_up("opa")
            assert sup.route_for("+905321234567") == "opb"  # failover
            assert sup.route_for("+447700900123") == "opb"
            with pytest.raises(NoRouteError):
                sup.route_for("+15551234567")
            parts = [
                OutboundPart(p.part_id, sup.route_for(p.pdu.destination_addr) or "", p.pdu)
                for p in make_parts("opa", 10)
            ]
            h.queue.put_many(parts)
            await h.queue.wait_idle()
            stats = sup.stats()
            assert stats.routes_up == {"opa": False, "opb": True}
            assert all(b.last_failure is not None for b in stats.for_route("opa"))
    assert {s[0].bind_name for s in h.queue.submissions.values()} == {"opb#1"}
    assert accepted_counts(h.sim) == {i: 1 for i in range(10)}


async def test_primary_route_is_used_while_up_and_none_when_all_down() -> None:
    queue = WorkQueue()
    async with trio.open_nursery() as nursery:
        sim: SimulatorHandle = await nursery.start(serve_simulator, SimulatorSettings())
        routes = [
            route("opa", sim.port, prefixes=("+90",), backup="opb"),
            route("opb", sim.port, prefixes=("+44",)),
        ]
        sup = BindSupervisor(routes, queue, queue, strict=True)
        assert sup.route_for("+905321234567") is None  # nothing is up before run()
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as binds:
                await binds.start(sup.run)
                await sup.wait_until_up()
                assert sup.route_for("+905321234567") == "opa"
                sup.shutdown()
        assert all(b.state is BindState.STOPPED for b in sup.binds())
        assert sup.route_for("+905321234567") is None
        nursery.cancel_scope.cancel()


class _Tracking(WorkQueue):
    """Signals once ``threshold`` parts have been taken by the binds."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold
        self.reached = trio.Event()

    def get_nowait(self, route: str) -> OutboundPart | None:
        part = super().get_nowait(route)
        if self.counts["taken"] >= self.threshold:
            self.reached.set()
        return part


@pytest.mark.parametrize("patient", [True, False])
async def test_shutdown_with_messages_in_flight_loses_none(patient: bool) -> None:
    """Patient: the grace period outlasts the round trip, every outstanding submit is answered
    before the unbind. Impatient: the SMSC answers too late for the grace period and the
    unbind timeout, so the unanswered parts go back to the queue (duplicate risk)."""
    window, binds, count = 10, 2, 200
    sim_settings = SimulatorSettings(response_delay_s=0.3)
    settings = {"binds": binds, "window": window, "unbind_timeout_s": 0.1}
    queue = _Tracking(threshold=binds * window)
    with trio.fail_after(TIMEOUT):
        async with running(
            lambda port: [route("a", port, **settings)],
            sim_settings,
            queue=queue,
            grace_s=2.0 if patient else 0.05,
        ) as h:
            await h.supervisor.wait_until_up("a", binds=binds)
            queue.put_many(make_parts("a", count))
            await queue.reached.wait()
            # leaving the block shuts down with a full window on each bind
    assert queue.taken_unresolved == 0
    submitted = set(queue.submissions)
    waiting = {p.part_id for route_queue in queue._queues.values() for p in route_queue}
    assert submitted | waiting == set(range(count))  # each part submitted or back in queue
    shutdown_retries = [r for r in queue.retries if r.reason == RetryReason.SHUTDOWN]
    totals = h.supervisor.stats().totals
    if patient:
        assert len(submitted) >= binds * window  # the full windows were answered
        assert not shutdown_retries
        assert h.sim.stats.unbinds == binds
    else:
        assert shutdown_retries
        assert totals.duplicates_risk == len(shutdown_retries)
    assert all(b.state is BindState.STOPPED for b in h.supervisor.binds())


async def test_an_unexpected_error_in_one_bind_does_not_take_the_others_down() -> None:
    class Buggy(WorkQueue):
        def __init__(self) -> None:
            super().__init__()
            self.good_done = trio.Event()

        def on_submitted(
            self, part: OutboundPart, smsc_message_id: str, bind_name: str, now: float
        ) -> None:
            if part.route == "bad":
                raise RuntimeError("a bug in the pipeline")
            super().on_submitted(part, smsc_message_id, bind_name, now)
            if self.counts["submitted"] == 5:
                self.good_done.set()

    queue = Buggy()
    async with trio.open_nursery() as nursery:
        sim: SimulatorHandle = await nursery.start(serve_simulator, SimulatorSettings())
        routes = [
            route("good", sim.port, prefixes=("+90",)),
            route("bad", sim.port, prefixes=("+44",)),
        ]
        sup = BindSupervisor(routes, queue, queue)  # not strict: the daemon's behaviour
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as binds:
                await binds.start(sup.run)
                await sup.wait_until_up()
                queue.put_many(make_parts("bad", 1))
                bad = sup.pools["bad"].binds[0]
                await sup.wait_for(lambda: bad.last_failure is not None)
                assert bad.last_failure is not None
                assert bad.last_failure.kind is FailureKind.INTERNAL_ERROR
                queue.put_many(make_parts("good", 5, start=10))
                await queue.good_done.wait()
                await sup.wait_for(lambda: sup.is_up("bad"))  # it reconnected
                sup.shutdown()
        nursery.cancel_scope.cancel()
    assert {s[0].bind_name for s in queue.submissions.values()} == {"good#1"}


def test_route_settings_from_the_config() -> None:
    from gateway.config import parse_config

    data = {
        "routes": [
            {
                "name": "opa",
                "prefixes": ["+90"],
                "host": "127.0.0.1",
                "system_id": "ulak",
                "password_env": "OPA_PW",
                "bind": "transmitter",
                "binds": 3,
                "window": 20,
                "tps": 250,
                "backup": "opb",
                "inactivity_timeout_s": 0,
            },
            {"name": "opb", "prefixes": ["+44"], "host": "127.0.0.1", "system_id": "u"},
        ]
    }
    settings = parse_config(data, {"OPA_PW": "s3cret"})
    routes = [RouteSettings.from_config(r) for r in settings.routes]
    opa = routes[0]
    assert (opa.name, opa.password, opa.bind_mode.value) == ("opa", "s3cret", "transmitter")
    assert (opa.binds, opa.window, opa.tps, opa.backup) == (3, 20, 250, "opb")
    assert opa.inactivity_timeout_s is None
    assert "s3cret" not in repr(opa)
    queue = WorkQueue()
    supervisor = BindSupervisor(routes, queue, queue)
    assert len(supervisor) == 4
    assert supervisor.router.primary("+905321234567").backup == "opb"
