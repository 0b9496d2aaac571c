"""Past the restart limit (``on_max_restarts``): cool down and come back, leave, or stop the hub;
the default retry schedule that rides out an outage; the group's state. memory://, mock clock."""

from __future__ import annotations

import random

import attrs
import pytest
import trio
import trio.testing

from actionhub import (
    ActionHub,
    Backoff,
    EscalationProtocol,
    GroupConfig,
    GroupState,
    Job,
    OnMaxRestarts,
    SlaveTemplate,
    WorkerStat,
)
from actionhub.inspect import apply_command
from actionhub.testing import EscalationLog


class Crash(RuntimeError):
    pass


class Dependency:
    """What the action needs; down until told otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.calls: list[tuple[float, object]] = []
        self.done: list[object] = []

    async def action(self, job: Job) -> None:
        self.calls.append((trio.current_time(), job.payload))
        await trio.sleep(0.01)
        if self.down:
            raise Crash("store unreachable")
        self.done.append(job.payload)


def stat_of(hub: ActionHub, name: str) -> WorkerStat:
    (stat,) = [s for s in hub.stats() if s.addr == name]
    return stat


async def until(predicate: object, timeout: float = 3600) -> None:
    """Wait (mock time) until ``predicate()`` holds."""
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - the state changes in the hub's tasks
            await trio.sleep(0.01)


COOL = Backoff(5.0, 300.0, 0.0)  # no jitter: exact durations


async def test_a_group_past_its_limit_cools_down_reads_nothing_and_comes_back(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    hub.bind(
        "save", store.action, max_restarts=2, restart_window=60, cool_down=COOL, buffer=50, max_workers=1
    )
    async with hub.running():
        for i in range(20):
            await hub.publish("save", i)
        await until(lambda: escalations.reasons().count("max_restarts") == 1)
        gave_up = trio.current_time()
        esc = escalations[-1]
        assert esc.group == "save" and isinstance(esc.error, Crash)
        assert esc.worker_protocol is EscalationProtocol.KILL_AND_ESCALATE
        assert esc.group_protocol is EscalationProtocol.RESTART  # it comes back
        assert esc.cool_down_until is not None and esc.as_dict()["cool_down_until"] == esc.cool_down_until
        stat = stat_of(hub, "save")  # still bound, still listed
        assert stat.state is GroupState.COOLING_DOWN and stat.cool_down_until == esc.cool_down_until
        assert stat.total_current_workers == 0 and stat.in_flight == 0
        assert stat.available_worker_capacity == 0
        calls = len(store.calls)
        assert calls == 3  # the three panics; nothing else started

        store.down = False
        await hub.publish("save", "during")  # in-process: kept in the buffer, not started
        await trio.sleep(4.9)
        assert len(store.calls) == calls and stat_of(hub, "save").state is GroupState.COOLING_DOWN

        await until(lambda: stat_of(hub, "save").state is GroupState.RUNNING)
        assert trio.current_time() - gave_up == pytest.approx(5.0, abs=0.05)
        await until(lambda: len(store.done) == 21)
        stat = stat_of(hub, "save")
        assert stat.cool_down_until is None and stat.total_dead_lettered == 0
        assert sorted(store.done, key=str) == sorted([*range(20), "during"], key=str)
    assert escalations.reasons() == ["panic", "panic", "max_restarts"]


async def test_the_cool_down_grows_with_each_give_up_in_a_row_and_resets_after_a_clean_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    given_up: list[float] = []
    hub = ActionHub(on_escalation=lambda e: given_up.append(trio.current_time()))
    store = Dependency()
    hub.bind("save", store.action, max_restarts=0, restart_window=30, cool_down=COOL)
    async with hub.running():
        # one message: it crashes, the group gives up; back from the cool-down it runs the
        # message's retry (due during the cool-down), which crashes again, and so on
        await hub.publish("save", "x")
        await until(lambda: len(given_up) == 5)
        runs = [at for at, _ in store.calls]
        cool_downs = [round(run - gave_up) for gave_up, run in zip(given_up, runs[1:], strict=False)]
        assert cool_downs == [5, 10, 20, 40]
        store.down = False
        await until(lambda: store.done == ["x"])  # after the fifth cool-down (80 s), it went through
        assert round(store.calls[-1][0] - given_up[-1]) == 80

        await trio.sleep(30)  # a whole restart window without a give-up
        store.down = True
        await hub.publish("save", "y")
        await until(lambda: len(given_up) == 6)
        await until(lambda: len(store.calls) == 8)  # x ran 6 times, y once, then y's retry
        assert round(store.calls[-1][0] - given_up[-1]) == 5  # back to the shortest


async def test_an_operator_restart_ends_a_cool_down_and_a_stop_does_not_wait_for_it(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    hub.bind("save", store.action, max_restarts=0, cool_down=Backoff(300, 300, 0))
    async with hub.running():
        await hub.publish("save", 1)
        await until(lambda: stat_of(hub, "save").state is GroupState.COOLING_DOWN)
        store.down = False
        answer = apply_command(hub, b'{"command": "restart", "group": "save"}')
        assert (answer.outcome, answer.detail) == ("applied", "ending the cool-down of save")
        await until(lambda: store.done == [1], timeout=10)  # its retry came back within a second
        assert stat_of(hub, "save").state is GroupState.RUNNING

        store.down = True
        await hub.publish("save", 2)
        await until(lambda: stat_of(hub, "save").state is GroupState.COOLING_DOWN)
        stopping = trio.current_time()
    assert trio.current_time() - stopping < 1  # the stop ended the 300 s cool-down at once


async def test_a_stopped_group_says_so(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    store = Dependency()
    hub.bind("save", store.action)
    async with hub.running():
        group = hub.group("save")
        assert group.stats().state is GroupState.RUNNING
        group.pause()
        assert group.stats().state is GroupState.PAUSED
        group.resume()
    assert group.stats().state is GroupState.STOPPED


async def test_remove_takes_the_group_off_the_hub(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    hub.bind("save", store.action, max_restarts=0, on_max_restarts="remove", max_workers=1)
    hub.bind("other", Dependency().action)
    async with hub.running():
        for i in range(5):
            await hub.publish("save", i)
        await until(lambda: [s.addr for s in hub.stats()] == ["other"])
        (esc,) = escalations
        assert esc.reason == "max_restarts" and esc.cool_down_until is None
        assert esc.group_protocol is EscalationProtocol.KILL_AND_ESCALATE
        assert [m.payload for m in esc.pending_messages] == [1, 2, 3, 4]  # in-process: handed over
        assert hub.is_running  # the other group goes on


async def test_stop_hub_stops_the_whole_hub_gracefully(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    finished: list[str] = []

    async def slow(job: Job) -> None:
        await trio.sleep(2)
        finished.append(job.payload)

    hub.bind("save", store.action, max_restarts=1, on_max_restarts=OnMaxRestarts.STOP_HUB)
    hub.bind("slow", slow)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await hub.publish("slow", "in flight")
        await hub.publish("save", 1)
        await hub.publish("save", 2)
        with trio.fail_after(60):
            await hub._stopped.wait()  # the hub stopped by itself
    assert not hub.is_running and hub.stopped_by is not None
    assert hub.stopped_by.reason == "max_restarts" and hub.stopped_by.group == "save"
    assert finished == ["in flight"]  # a graceful stop: the other group's work finished
    assert escalations.reasons()[-1] == "max_restarts"


async def test_a_master_cools_down_with_its_slaves_and_brings_them_back(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    audited: list[object] = []
    audit_started = trio.Event()
    failed_once: set[object] = set()

    async def audit(job: Job) -> None:
        audit_started.set()
        await trio.sleep(1)
        if job.payload == "retry-me" and job.payload not in failed_once:
            failed_once.add(job.payload)
            raise Crash("audit store blip")
        audited.append(job.payload)

    hub.bind(
        "master",
        store.action,
        max_restarts=1,
        max_workers=1,
        cool_down=COOL,
        slaves=[SlaveTemplate("audit", audit, max_workers=1, retry_backoff=Backoff(3, 3, 0))],
    )
    async with hub.running():
        slave = hub.group("master/slaves/audit")
        for payload in ["retry-me", 0, 1, 2, 3, 4]:
            await hub.publish("master/slaves/audit", payload)
        await audit_started.wait()
        await hub.publish("master", 1)
        await hub.publish("master", 2)
        await until(lambda: "max_restarts" in escalations.reasons())  # reported once stood down
        # the slave stands down with its master: listed, no workers, its messages kept
        assert hub.group("master/slaves/audit") is slave
        assert [(s.addr, s.state) for s in hub.stats()] == [
            ("master", GroupState.COOLING_DOWN),
            ("master/slaves/audit", GroupState.COOLING_DOWN),
        ]
        assert slave.stats().total_current_workers == 0
        ran_before = list(audited)
        await hub.publish("master/slaves/audit", "during")  # in-process: waits in its buffer
        await trio.sleep(4)
        assert audited == ran_before  # nothing ran while the master cooled down
        store.down = False
        await until(lambda: stat_of(hub, "master/slaves/audit").state is GroupState.RUNNING)
        await until(
            lambda: sorted(audited, key=str) == sorted(["retry-me", 0, 1, 2, 3, 4, "during"], key=str)
        )
        await until(lambda: sorted(store.done) == [1, 2])
        assert await hub.dead_letters("master/slaves/audit") == []


async def test_a_slave_past_its_own_limit_is_respawned_by_its_master(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    """A slave gives up to its master (whatever its own on_max_restarts), as in OTP."""
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    hub.bind("master", Dependency().action, slaves=[SlaveTemplate("s", store.action, max_restarts=0)])
    async with hub.running():
        first = hub.group("master/slaves/s")
        await hub.publish("master/slaves/s", 1)
        await until(lambda: hub.group("master/slaves/s") is not first)
        assert hub.group("master").stats().total_restarts == 1
        assert hub.group("master").stats().state is GroupState.RUNNING


async def test_an_ordered_groups_retries_held_in_place_survive_a_cool_down(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    hub.bind("save", store.action, ordered=True, max_restarts=2, cool_down=COOL, max_workers=4)
    async with hub.running():
        for n in range(3):
            for key in "abc":
                await hub.publish("save", f"{key}{n}", key=key)
        await until(lambda: stat_of(hub, "save").state is GroupState.COOLING_DOWN)
        store.down = False
        await until(lambda: len(store.done) == 9)
        for key in "abc":  # each key's messages ran in publish order, none lost
            assert [p for p in store.done if p.startswith(key)] == [f"{key}{n}" for n in range(3)]


def test_the_default_retry_schedule_spans_more_than_five_minutes() -> None:
    config = GroupConfig()
    assert config.on_max_restarts is OnMaxRestarts.COOL_DOWN
    assert config.cool_down == Backoff(5, 300, 0.2)

    class Unlucky(random.Random):
        def random(self) -> float:
            return 1.0  # every delay cut short by the whole jitter

    retries = range(1, config.max_attempts)  # the delays before attempts 2..max_attempts
    assert sum(config.retry_backoff.delay(n, Unlucky()) for n in retries) == pytest.approx(348)
    no_jitter = attrs.evolve(config.retry_backoff, jitter=0)
    assert sum(no_jitter.delay(n) for n in retries) == 1 + 2 + 4 + 8 + 16 + 32 + 64 + 128 + 180 == 435


async def test_with_the_defaults_a_five_minute_outage_dead_letters_nothing(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    hub.bind("save", store.action)  # every option at its default
    async with hub.running():
        for i in range(50):
            await hub.publish("save", i)
        await trio.sleep(300)
        assert escalations.reasons().count("max_restarts") >= 1  # it did give up, and cool down
        store.down = False
        await until(lambda: len(store.done) == 50)
        assert await hub.dead_letters("save") == []
        assert stat_of(hub, "save").total_dead_lettered == 0


async def test_the_default_schedule_still_ends_in_the_dead_letters(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    store = Dependency()
    hub.bind("save", store.action, max_restarts=1000)  # only the message schedule matters here
    async with hub.running():
        start = trio.current_time()
        await hub.publish("save", "poison")
        await until(lambda: stat_of(hub, "save").total_dead_lettered == 1)
        assert trio.current_time() - start >= 300
        (letter,) = await hub.dead_letters("save")
        assert letter.attempts == 10 and letter.reason == "max_attempts: failed 10 of 10 attempts"


async def test_stats_metrics_and_the_cli_table_show_the_state(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    from rich.console import Console

    from actionhub.cli import stats_table
    from actionhub.inspect import HubSnapshot, snapshot_of
    from actionhub.metrics import HubMetrics

    hub = ActionHub(on_escalation=escalations, name="shop")
    metrics = HubMetrics(hub)
    store = Dependency()
    hub.bind("save", store.action, max_restarts=0, cool_down=Backoff(120, 120, 0))
    async with hub.running():
        await hub.publish("save", 1)
        await until(lambda: stat_of(hub, "save").state is GroupState.COOLING_DOWN)
        labels = {"hub": "shop", "group": "save", "topic": "save"}
        for state in GroupState:
            value = metrics.registry.get_sample_value(
                "actionhub_group_state", {**labels, "state": state.value}
            )
            assert value == (1 if state is GroupState.COOLING_DOWN else 0), state
        remaining = metrics.registry.get_sample_value("actionhub_cool_down_remaining_seconds", labels)
        assert remaining is not None and 119 < remaining <= 120
        snapshot = HubSnapshot.from_json(snapshot_of(hub, 0.0).to_json())  # as another process reads it
        (stat,) = snapshot.groups
        assert stat.state is GroupState.COOLING_DOWN and stat.cool_down_until is not None
        console = Console(width=250)
        with console.capture() as captured:
            console.print(stats_table([snapshot], "memory://", 0.0))
        header, row = captured.get().splitlines()[1:3]
        assert header.split()[:3] == ["HUB", "GROUP", "STATE"]
        assert row.split()[:3] == ["shop", "save", "cooling_down"]
        assert row.split()[3] in ("(120s)", "(119s)")  # seconds left, by the wall clock
