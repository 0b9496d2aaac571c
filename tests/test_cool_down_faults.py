"""What goes wrong around a cool-down, and must not: a group that fails, a stand-down that
overlaps an operator's restart, a master and its slaves, a bus that refuses or hangs when the group
comes back. memory:// (some made to say they are durable), mock clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actionhub import ActionHub, Backoff, GroupState, HubStopped, Job, SlaveTemplate, WorkerStat
from actionhub.bus.base import Inbox, Subscription
from actionhub.bus.memory import MemoryBus
from actionhub.inspect import apply_command
from actionhub.testing import EscalationLog
from tests.faults import cannot_start


class Crash(RuntimeError):
    pass


def stat_of(hub: ActionHub, name: str) -> WorkerStat:
    (stat,) = [s for s in hub.stats() if s.addr == name]
    return stat


async def until(predicate: Any, timeout: float = 3600) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - the state changes in the hub's tasks
            await trio.sleep(0.01)


class FlakyBus(MemoryBus):
    """memory:// that says it is durable (a cool-down closes and reopens its subscriptions, as on
    Redis); subscribing to a topic in ``hang`` waits while ``outage`` is on, and the subscribe
    numbered ``refuse`` (1-based) raises, as Redis answering OOM or NOPERM would."""

    durable = True

    def __init__(self, hang: frozenset[str] = frozenset(), refuse: int = 0) -> None:
        super().__init__()
        self.hang, self.refuse = hang, refuse
        self.outage = False
        self.back = trio.Event()
        self.subscribes = 0

    async def subscribe(self, topic: str, group: str, inbox: Inbox, **options: Any) -> Subscription:
        self.subscribes += 1
        if self.subscribes == self.refuse:
            raise RuntimeError("OOM command not allowed when used memory > 'maxmemory'")
        if self.outage and topic in self.hang:
            await self.back.wait()
        return await super().subscribe(topic, group, inbox, **options)

    def subscribers(self, topic: str) -> int:
        return sum(len(members) for members in self._groups.get(topic, {}).values())


async def test_a_group_that_fails_itself_takes_nothing_more(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)

    async def save(job: Job) -> None:
        pass

    hub.bind("save", save, max_workers=1, min_workers=0)
    async with hub.running():
        group = hub.group("save")

        group.pool._worker_context = cannot_start  # type: ignore[method-assign]
        await hub.publish("save", 1)
        await until(group.finished.is_set)
        assert escalations.reasons() == ["panic"] and [s.addr for s in hub.stats()] == []
        assert group.inbox.closed and group.subscription is None  # unsubscribed: fed no more
        await hub.publish("save", 2)  # neither a crash of the hub nor a message kept by a dead group
        assert len(group.inbox) == 0
        with pytest.raises(HubStopped):
            await group.inbox.put(None)  # type: ignore[arg-type]


async def test_an_operators_restart_during_the_stand_down_is_not_undone_by_a_late_panic(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)

    async def action(job: Job) -> None:
        await trio.sleep(2 if job.payload == "slow" else 0.01)
        if job.attempt == 1:
            raise Crash(job.payload)  # each fails once, then succeeds

    hub.bind("save", action, max_restarts=0, max_workers=2, cool_down=Backoff(300, 600, 0))
    async with hub.running():
        await hub.publish("save", "slow")
        await hub.publish("save", "fast")
        await until(lambda: stat_of(hub, "save").state is GroupState.COOLING_DOWN)
        # the stand-down waits for "slow" (2 s, then a panic); the operator ends the cool-down
        apply_command(hub, b'{"command": "restart", "group": "save"}')
        await trio.sleep(10)
        stat = stat_of(hub, "save")
        assert stat.state is GroupState.RUNNING  # slow's late panic did not count against the new life
        assert escalations.reasons().count("max_restarts") == 1
        assert stat.total_message_processed == 2  # both retried and done


async def test_a_master_stops_taking_work_before_its_slaves_stand_down(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    started: list[tuple[float, object]] = []

    async def master(job: Job) -> None:
        started.append((trio.current_time(), job.payload))
        await trio.sleep(0.5)
        if job.payload == "crash":
            raise Crash("down")

    async def slow_slave(job: Job) -> None:
        await trio.sleep(8)

    hub.bind(
        "master",
        master,
        max_restarts=0,
        max_workers=1,
        cool_down=Backoff(600, 600, 0),
        slaves=[SlaveTemplate("s", slow_slave)],
    )
    async with hub.running():
        await hub.publish("master/slaves/s", "x")
        await trio.sleep(0.1)
        await hub.publish("master", "crash")
        for i in range(10):
            await hub.publish("master", i)
        await until(lambda: "max_restarts" in escalations.reasons())
        assert [payload for _, payload in started] == ["crash"]  # nothing started after the give-up


async def test_a_slave_respawned_while_its_master_cools_down_waits_with_it(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    bus = FlakyBus(hang=frozenset({"master/slaves/s"}))
    hub = ActionHub(bus, on_escalation=escalations)
    master_down = False

    async def master(job: Job) -> None:
        if master_down:
            raise Crash("master down")

    async def slave(job: Job) -> None:
        if job.payload == "boom":
            raise Crash("slave boom")

    hub.bind(
        "master",
        master,
        max_restarts=1,
        cool_down=Backoff(5, 5, 0),
        slaves=[SlaveTemplate("s", slave, max_restarts=0)],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        bus.outage = True
        await hub.publish("master/slaves/s", "boom")  # the slave gives up; its respawn waits for the bus
        await trio.sleep(1)
        master_down = True
        await hub.publish("master", 1)  # over the master's limit (the respawn counted)
        await until(lambda: "max_restarts" in escalations.reasons())
        await trio.sleep(6)  # the master is back; the slave's respawn still waits for the bus
        master_down = False
        bus.back.set()
        await until(lambda: bus.subscribers("master/slaves/s") == 1)
        await until(lambda: stat_of(hub, "master/slaves/s").state is GroupState.RUNNING)
        await trio.sleep(5)
        assert bus.subscribers("master/slaves/s") == 1  # one slave of that name, not two
        with trio.fail_after(60):
            await hub.stop()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("hanging", ["save", "master/slaves/s"])
async def test_a_stop_while_a_group_or_its_slave_subscribes_again_does_not_hang(
    autojump_clock: trio.abc.Clock, hanging: str
) -> None:
    bus = FlakyBus(hang=frozenset({hanging}))
    hub = ActionHub(bus)

    async def crash(job: Job) -> None:
        await trio.sleep(0.01)
        raise Crash("down")

    async def ok(job: Job) -> None:
        pass

    name = hanging.split("/")[0]
    slaves = [SlaveTemplate("s", ok)] if "/" in hanging else []
    hub.bind(name, crash, max_restarts=0, cool_down=Backoff(5, 5, 0), slaves=slaves)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        bus.outage = True
        await hub.publish(name, 1)
        await until(lambda: stat_of(hub, name).state is GroupState.COOLING_DOWN)
        await trio.sleep(10)  # the cool-down is over; subscribing again hangs
        assert stat_of(hub, hanging).state is GroupState.COOLING_DOWN  # not running without its reads
        with trio.fail_after(60):
            await hub.stop()
        nursery.cancel_scope.cancel()


async def test_a_group_that_cannot_subscribe_again_cools_down_again(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    bus = FlakyBus(refuse=2)  # the first subscribe works, the one coming back is refused
    hub = ActionHub(bus, on_escalation=escalations)
    down = True

    async def save(job: Job) -> None:
        if down:
            raise Crash("down")

    hub.bind("save", save, max_restarts=0, cool_down=Backoff(5, 60, 0))
    async with hub.running():
        await hub.publish("save", 1)
        await until(lambda: escalations.reasons() == ["max_restarts", "start_failure"])
        stat = stat_of(hub, "save")  # still bound, cooling down again, for longer
        assert stat.state is GroupState.COOLING_DOWN
        assert escalations[-1].cool_down_until is not None and "OOM" in repr(escalations[-1].error)
        down = False
        await until(lambda: stat_of(hub, "save").state is GroupState.RUNNING)  # the third subscribe
        await hub.publish("save", 2)
        await until(lambda: stat_of(hub, "save").total_message_processed == 1)
