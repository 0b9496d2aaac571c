"""The supervision matrix of WorkerGroup (DESIGN §3), through the public API on memory://.

Every test runs on trio's MockClock with autojump (the ``autojump_clock`` fixture): sleeps are
mock time, so timings are exact and nothing waits for real time. Worker identity is the trio task
running the action (an action is awaited directly by its worker task).
"""

from __future__ import annotations

import itertools

import attrs
import pytest
import trio
import trio.testing
from trio.lowlevel import Task, current_task

from actionhub import (
    ActionHub,
    Behaviour,
    Escalation,
    EscalationProtocol,
    GroupState,
    HubStopped,
    Instance,
    Job,
    Reject,
    WorkerStat,
)
from actionhub.testing import EscalationLog

# --- helpers


def stat_of(hub: ActionHub, name: str) -> WorkerStat:
    """The snapshot of group ``name``; fails if the hub does not list it exactly once."""
    matching = [s for s in hub.stats() if s.addr == name]
    assert len(matching) == 1, f"{name!r} in {[s.addr for s in hub.stats()]}"
    return matching[0]


def addrs(hub: ActionHub) -> list[str]:
    return [s.addr for s in hub.stats()]


def leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


class Seen:
    """Records which worker task ran which payload, when, and the peak concurrency."""

    def __init__(self) -> None:
        self.runs: list[tuple[object, Task, float]] = []
        self.done: list[object] = []
        self.active = 0
        self.peak = 0
        self.first_seen: dict[Task, float] = {}

    def enter(self, payload: object) -> Task:
        task = current_task()
        now = trio.current_time()
        self.runs.append((payload, task, now))
        self.first_seen.setdefault(task, now)
        self.active += 1
        self.peak = max(self.peak, self.active)
        return task

    def leave(self, payload: object) -> None:
        self.active -= 1
        self.done.append(payload)

    def task_of(self, payload: object) -> Task:
        (task,) = [t for p, t, _ in self.runs if p == payload]
        return task

    def tasks_of(self, payloads: list[object]) -> set[Task]:
        return {t for p, t, _ in self.runs if p in payloads}

    @property
    def tasks(self) -> set[Task]:
        return {t for _, t, _ in self.runs}


class Crash(RuntimeError):
    pass


async def _noop(job: Job) -> None:
    pass


# --- RESTART_ONE


async def test_restart_one_replaces_only_the_crashed_worker_and_keeps_the_buffer(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    seen = Seen()
    gate, release, probe = trio.Event(), trio.Event(), trio.Event()

    @hub.action("one", min_workers=3, max_workers=3, buffer=10, max_attempts=1)
    async def one(job: Job) -> None:
        seen.enter(job.payload)
        if job.payload == "crash":
            await gate.wait()
            raise Crash("boom")
        if job.payload.startswith("hold"):
            await release.wait()
        if job.payload.startswith("probe"):
            await probe.wait()
        seen.leave(job.payload)

    async with hub.running():
        for payload in ["hold-a", "hold-b", "crash"]:
            await hub.publish("one", payload)
        await trio.sleep(0.1)
        old = {seen.task_of(p) for p in ["hold-a", "hold-b", "crash"]}
        assert len(old) == 3  # one message per worker
        crashed = seen.task_of("crash")
        siblings = old - {crashed}
        nursery = crashed.parent_nursery
        assert nursery is not None

        buffered = [f"buf-{i}" for i in range(5)]
        for payload in buffered:
            await hub.publish("one", payload)
        assert stat_of(hub, "one").buffered == 5

        gate.set()  # the crash happens while both siblings are busy and 5 messages are buffered
        await trio.sleep(0.1)
        assert seen.done == buffered  # all buffered messages were processed, in order ...
        (replacement,) = seen.tasks_of(buffered)  # ... by one new worker
        assert replacement not in old
        assert crashed not in nursery.child_tasks  # the crashed worker's task is gone
        assert siblings <= set(nursery.child_tasks)  # the siblings are untouched, still busy
        stat = stat_of(hub, "one")
        assert (stat.in_flight, stat.total_current_workers) == (2, 3)

        release.set()  # siblings finish their in-flight messages normally
        await trio.sleep(0.1)
        assert sorted(seen.done[5:]) == ["hold-a", "hold-b"]

        for i in range(3):  # one probe per live worker: who is alive now?
            await hub.publish("one", f"probe-{i}")
        await trio.sleep(0.1)
        assert seen.tasks_of([f"probe-{i}" for i in range(3)]) == siblings | {replacement}
        probe.set()
        await trio.sleep(0.1)

        stat = stat_of(hub, "one")
        assert stat.total_restarts == 1 and stat.total_panics == 1
        assert stat.total_created_workers == 4
        assert stat.total_message_processed == 2 + 5 + 3
    (esc,) = escalations
    assert esc.reason == "panic" and esc.group == "one"
    assert esc.worker_protocol is EscalationProtocol.RESTART
    assert esc.group_protocol is EscalationProtocol.RESUME
    assert isinstance(esc.error, Crash) and esc.offending_message is not None
    assert esc.offending_message.payload == "crash"


# --- RESTART_ALL


async def test_restart_all_replaces_every_worker_and_keeps_the_buffer(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    seen = Seen()
    gate, release, probe = trio.Event(), trio.Event(), trio.Event()

    @hub.action(
        "all", min_workers=3, max_workers=3, buffer=10, max_attempts=1, behaviour=Behaviour.RESTART_ALL
    )
    async def all_(job: Job) -> None:
        seen.enter(job.payload)
        if job.payload == "crash":
            await gate.wait()
            raise Crash("boom")
        if job.payload == "crash-now":
            raise Crash("boom again")
        if job.payload.startswith("hold"):
            await release.wait()
        if job.payload.startswith("probe"):
            await probe.wait()
        seen.leave(job.payload)

    async with hub.running():
        for payload in ["hold-a", "hold-b", "crash"]:
            await hub.publish("all", payload)
        await trio.sleep(0.1)
        old = {seen.task_of(p) for p in ["hold-a", "hold-b", "crash"]}
        assert len(old) == 3
        buffered = [f"buf-{i}" for i in range(4)]
        for payload in buffered:
            await hub.publish("all", payload)

        gate.set()
        await trio.sleep(1)
        # restarting: intake paused until every old worker has stopped; the siblings are still busy
        stat = stat_of(hub, "all")
        assert stat.buffered == 4 and seen.done == []
        assert stat.total_restarts == 1

        release.set()  # the siblings finish their in-flight message (graceful), then stop
        await trio.sleep(0.1)
        assert sorted(seen.done[:2]) == ["hold-a", "hold-b"]
        assert sorted(seen.done[2:]) == buffered  # buffered messages survived the restart
        assert not seen.tasks_of(buffered) & old  # ... and were handled by fresh workers only

        for i in range(3):
            await hub.publish("all", f"probe-{i}")
        await trio.sleep(0.1)
        new = seen.tasks_of([f"probe-{i}" for i in range(3)])
        assert len(new) == 3 and not new & old  # every worker was replaced
        probe.set()
        await trio.sleep(0.1)
        stat = stat_of(hub, "all")
        assert stat.total_restarts == 1 and stat.total_panics == 1
        assert stat.total_created_workers == 6
        assert stat.total_current_workers == 3

        await hub.publish("all", "crash-now")  # a second crash: exactly one more restart
        await trio.sleep(1)
        stat = stat_of(hub, "all")
        assert stat.total_restarts == 2 and stat.total_panics == 2
        assert stat.total_created_workers == 9 and stat.total_current_workers == 3
        assert stat.total_message_processed == 2 + 4 + 3
    assert escalations.reasons() == ["panic", "panic"]
    assert all(e.worker_protocol is EscalationProtocol.RESTART for e in escalations)
    assert all(e.group_protocol is EscalationProtocol.RESTART for e in escalations)


# --- STOP_ALL_AND_ESCALATE


async def test_stop_all_and_escalate_hands_over_pending_messages_and_removes_the_group(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    gate = trio.Event()
    fragile_calls: list[object] = []
    steady_calls: list[object] = []

    @hub.action(
        "fragile", max_workers=1, buffer=10, max_attempts=1, behaviour=Behaviour.STOP_ALL_AND_ESCALATE
    )
    async def fragile(job: Job) -> None:
        fragile_calls.append(job.payload)
        if job.payload == "crash":
            await gate.wait()
            raise Crash("fatal")

    @hub.action("steady")
    async def steady(job: Job) -> None:
        steady_calls.append(job.payload)

    async with hub.running():
        group = hub.group("fragile")
        await hub.publish("fragile", "crash")
        await trio.sleep(0.1)
        for i in range(5):
            await hub.publish("fragile", {"n": i})
        assert stat_of(hub, "fragile").buffered == 5

        gate.set()
        await trio.sleep(0.1)
        (esc,) = escalations
        assert esc.group == "fragile" and esc.reason == "panic"
        assert esc.worker_protocol is EscalationProtocol.KILL_AND_ESCALATE
        assert esc.group_protocol is EscalationProtocol.KILL_AND_ESCALATE
        assert isinstance(esc.error, Crash)
        assert esc.offending_message is not None and esc.offending_message.payload == "crash"
        assert [m.payload for m in esc.pending_messages] == [{"n": i} for i in range(5)]  # publish order
        assert fragile_calls == ["crash"]  # the pending messages were not started

        assert addrs(hub) == ["steady"]  # the group is removed ...
        with pytest.raises(KeyError):
            hub.group("fragile")
        assert group.stats().total_escalations == 1

        await hub.publish("fragile", "after")  # ... and its topic unsubscribed
        for i in range(3):
            await hub.publish("steady", i)  # the other group keeps running
        await trio.sleep(1)
        assert fragile_calls == ["crash"]
        assert steady_calls == [0, 1, 2]
        assert stat_of(hub, "steady").total_message_processed == 3
    assert len(escalations) == 1


# --- DO_NOTHING


async def test_do_nothing_keeps_the_same_worker(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    seen = Seen()

    @hub.action("resume", max_workers=1, max_attempts=1, behaviour=Behaviour.DO_NOTHING)
    async def resume(job: Job) -> None:
        seen.enter(job.payload)
        if job.payload.startswith("crash"):
            raise Crash(job.payload)
        seen.leave(job.payload)

    async with hub.running():
        for payload in ["crash-1", "ok-1", "crash-2", "ok-2"]:
            await hub.publish("resume", payload)
            await trio.sleep(1)
        assert len(seen.tasks) == 1  # the same worker task took every message
        (worker,) = seen.tasks
        assert worker in (worker.parent_nursery.child_tasks if worker.parent_nursery else ())
        stat = stat_of(hub, "resume")
        assert stat.total_panics == 2
        assert stat.total_restarts == 0
        assert stat.total_created_workers == 1 and stat.total_killed_workers == 0
        assert stat.total_message_processed == 2
    assert escalations.reasons() == ["panic", "panic"]
    assert [str(e.error) for e in escalations] == ["crash-1", "crash-2"]
    for esc in escalations:
        assert esc.worker_protocol is EscalationProtocol.RESUME
        assert esc.group_protocol is EscalationProtocol.RESUME


# --- restart limit


def _crasher(hub: ActionHub, name: str, calls: list[float], **config: object) -> None:
    async def crash(job: Job) -> None:
        calls.append(trio.current_time())
        if job.payload == "crash":
            raise Crash("boom")

    hub.bind(name, crash, max_attempts=1, **config)


async def test_restart_limit_escalates_once_on_the_crash_over_the_limit(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    calls: list[float] = []
    _crasher(hub, "limited", calls, max_restarts=2, restart_window=3600, on_max_restarts="remove")

    async with hub.running():
        for _ in range(2):
            await hub.publish("limited", "crash")
            await trio.sleep(1)
        stat = stat_of(hub, "limited")
        assert stat.total_restarts == 2 and escalations.reasons() == ["panic", "panic"]

        await hub.publish("limited", "crash")  # the third restart in the window is one too many
        await trio.sleep(1)
        assert escalations.reasons() == ["panic", "panic", "max_restarts"]
        esc = escalations[-1]
        assert esc.group == "limited" and isinstance(esc.error, Crash)
        assert esc.group_protocol is EscalationProtocol.KILL_AND_ESCALATE
        assert esc.worker_protocol is EscalationProtocol.KILL_AND_ESCALATE
        assert esc.restarts == 2
        assert "limited" not in addrs(hub)

        for _ in range(3):  # the group is gone: no further crash, no further escalation
            await hub.publish("limited", "crash")
            await trio.sleep(1)
    assert escalations.reasons().count("max_restarts") == 1
    assert len(escalations) == 3 and len(calls) == 3


async def test_restart_limit_is_a_sliding_window(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    calls: list[float] = []
    _crasher(hub, "spread", calls, max_restarts=1, restart_window=1.0, on_max_restarts="remove")

    async with hub.running():
        for _ in range(10):  # one crash every 2.1 s: never two restarts within 1 s
            await hub.publish("spread", "crash")
            await trio.sleep(2.1)
        assert escalations.reasons() == ["panic"] * 10
        stat = stat_of(hub, "spread")
        assert stat.total_restarts == 10 and stat.total_panics == 10

        # the window does matter: two crashes 0.5 s apart are over the limit
        await hub.publish("spread", "crash")
        await trio.sleep(0.5)
        await hub.publish("spread", "crash")
        await trio.sleep(1)
        assert escalations.reasons() == ["panic"] * 11 + ["max_restarts"]
        assert "spread" not in addrs(hub)


async def test_max_restarts_zero_escalates_on_the_first_crash(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    calls: list[float] = []
    _crasher(hub, "fragile", calls, max_restarts=0, on_max_restarts="remove")
    hub.bind("other", _noop)

    async with hub.running():
        await hub.publish("fragile", "ok")
        await trio.sleep(1)
        assert escalations == []
        await hub.publish("fragile", "crash")
        await trio.sleep(1)
        assert escalations.reasons() == ["max_restarts"]
        assert escalations[0].group_protocol is EscalationProtocol.KILL_AND_ESCALATE
        assert escalations[0].restarts == 0
        assert addrs(hub) == ["other"]


# --- restart backoff


async def test_restart_backoff_delays_the_replacement_exponentially(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = ActionHub()
    seen = Seen()
    crash_times: list[float] = []

    @hub.action(
        "backoff",
        max_workers=1,
        max_attempts=1,
        restart_backoff=(1.0, 3.0, 0.0),
        max_restarts=10,
        restart_window=10.0,
    )
    async def backoff(job: Job) -> None:
        seen.enter(job.payload)
        if job.payload.startswith("crash"):
            crash_times.append(trio.current_time())
            raise Crash(job.payload)
        seen.leave(job.payload)

    async with hub.running():
        for payload in ["crash-1", "crash-2", "crash-3", "ok-1"]:
            await hub.publish("backoff", payload)
        await trio.sleep(8)
        starts = sorted(seen.first_seen.values())
        assert len(starts) == 4  # four workers: the first and three replacements
        delays = [round(start - crash, 6) for crash, start in zip(crash_times, starts[1:], strict=True)]
        assert delays == [1.0, 2.0, 3.0]  # min, 2*min, then capped at max
        assert seen.done == ["ok-1"]

        await trio.sleep(20)  # the restarts leave the window: the backoff starts again at min
        await hub.publish("backoff", "crash-4")
        await hub.publish("backoff", "ok-2")
        await trio.sleep(5)
        starts = sorted(seen.first_seen.values())
        assert round(starts[-1] - crash_times[-1], 6) == 1.0
        assert seen.done == ["ok-1", "ok-2"]
        assert stat_of(hub, "backoff").total_restarts == 4


# --- defects that must not come back


async def test_concurrent_publishers_never_run_more_than_max_workers(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    seen = Seen()

    @hub.action("crowd", max_workers=3, buffer=10, accept_wait=10_000)
    async def crowd(job: Job) -> None:
        seen.enter(job.payload)
        await trio.sleep(0.01)
        seen.leave(job.payload)

    async with hub.running():
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(hub.publish, "crowd", i)
        await trio.sleep(10)
        stat = stat_of(hub, "crowd")
    assert seen.peak == 3
    assert sorted(seen.done) == list(range(200))  # type: ignore[type-var]
    assert len(seen.tasks) == 3
    assert stat.total_created_workers == 3
    assert stat.total_message_processed == 200 and stat.total_overloaded == 0


async def test_publish_while_stopping_and_after_stop_raises_hub_stopped(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = ActionHub()
    started = trio.Event()

    @hub.action("slow", shutdown_timeout=5)
    async def slow(job: Job) -> None:
        started.set()
        await trio.sleep(3)

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await hub.publish("slow", 1)
        await started.wait()
        nursery.start_soon(hub.stop)
        await trio.sleep(1)  # the hub is stopping: the in-flight message still runs
        assert not hub.is_running
        before = trio.current_time()
        with pytest.raises(HubStopped):
            await hub.publish("slow", 2)
        assert trio.current_time() == before  # raised at once, nothing blocked
    with trio.fail_after(1), pytest.raises(HubStopped):
        await hub.publish("slow", 3)
    assert stat_of(hub, "slow").total_message_received == 1
    assert stat_of(hub, "slow").total_message_processed == 1


async def test_stop_during_restart_all_is_bounded_by_shutdown_timeout(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    cancelled: list[float] = []

    @hub.action(
        "group",
        min_workers=2,
        max_workers=2,
        max_attempts=1,
        behaviour=Behaviour.RESTART_ALL,
        shutdown_timeout=5,
    )
    async def group(job: Job) -> None:
        if job.payload == "slow":
            try:
                await trio.sleep(1000)  # slow to stop: only the shutdown_timeout cancel ends it
            except trio.Cancelled:
                cancelled.append(trio.current_time())
                raise
        else:
            await trio.sleep(0.5)
            raise Crash("boom")

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await hub.publish("group", "slow")
        await hub.publish("group", "crash")
        await trio.sleep(1)  # t0 + 0.5: crash, the restart-all waits for the slow worker
        assert stat_of(hub, "group").total_restarts == 1
        stop_called = trio.current_time()
        with trio.fail_after(20):
            await hub.stop()
        assert trio.current_time() - stop_called <= 5
    assert len(cancelled) == 1
    assert cancelled[0] == pytest.approx(stop_called - 0.5 + 5)  # crash time + shutdown_timeout
    stat = stat_of(hub, "group")
    assert stat.total_panics == 1  # the cancelled slow worker is no panic
    assert stat.total_current_workers == 0
    assert escalations.reasons() == ["panic"]


async def test_min_workers_never_idle_out(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    hub.bind("steady", _noop, min_workers=2, max_workers=5, max_idleness=1)

    async with hub.running():
        await trio.sleep(100)
        stat = stat_of(hub, "steady")
        assert stat.total_current_workers == 2
        assert stat.total_idled_workers == 0
        assert stat.total_created_workers == 2


async def test_workers_above_min_idle_out_after_a_burst(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    release = trio.Event()
    seen = Seen()

    @hub.action("burst", min_workers=2, max_workers=5, max_idleness=1)
    async def burst(job: Job) -> None:
        seen.enter(job.payload)
        await release.wait()
        seen.leave(job.payload)

    async with hub.running():
        for i in range(8):
            await hub.publish("burst", i)
        await trio.sleep(0.1)
        stat = stat_of(hub, "burst")
        assert stat.total_current_workers == 5 and seen.peak == 5
        release.set()
        await trio.sleep(0.5)  # the burst is done, not yet idle for max_idleness
        stat = stat_of(hub, "burst")
        assert stat.total_message_processed == 8
        assert stat.total_current_workers == 5 and stat.total_idled_workers == 0
        await trio.sleep(100)
        stat = stat_of(hub, "burst")
        assert stat.total_current_workers == 2  # back down to min ...
        assert stat.total_idled_workers == 5 - 2  # ... and only the ones above min idled out
        assert stat.total_created_workers == 5
        assert stat.total_restarts == 0 and stat.total_killed_workers == 0


async def test_total_created_workers_counts_each_start_once(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    seen = Seen()
    release = trio.Event()

    @hub.action("count", min_workers=1, max_workers=3, max_attempts=1)
    async def count(job: Job) -> None:
        seen.enter(job.payload)
        if job.payload == "crash":
            raise Crash("boom")
        await release.wait()
        seen.leave(job.payload)

    async with hub.running():
        for i in range(3):  # scale to 3
            await hub.publish("count", f"a{i}")
        await trio.sleep(0.1)
        release.set()
        await trio.sleep(0.1)
        await hub.publish("count", "crash")  # one worker replaced
        await trio.sleep(0.1)
        release = trio.Event()
        for i in range(3):  # every live worker takes one: each is seen
            await hub.publish("count", f"b{i}")
        await trio.sleep(0.1)
        stat = stat_of(hub, "count")
        assert stat.total_current_workers == 3
        release.set()
    assert len(seen.tasks) == 4
    assert stat.total_created_workers == len(seen.tasks)
    assert stat.total_restarts == 1


async def test_aliased_group_can_be_unbound_and_bound_again(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    first: list[object] = []
    second: list[object] = []

    @hub.action("x", topic="t")
    async def x(job: Job) -> None:
        first.append(job.payload)

    async def x_again(job: Job) -> None:
        second.append(job.payload)

    async with hub.running():
        await hub.publish("t", 1)
        await trio.sleep(1)
        assert first == [1]
        with trio.fail_after(10):
            await hub.unbind("x")
        assert "x" not in addrs(hub)
        await hub.publish("t", 2)  # nobody consumes t any more
        await trio.sleep(1)

        hub.bind("x", x_again, topic="t")
        await trio.sleep(0.1)
        await hub.publish("t", 3)
        await trio.sleep(1)
        stat = stat_of(hub, "x")
        assert stat.topic == "t" and stat.total_message_processed == 1
    assert first == [1]
    assert second == [3]


@pytest.mark.parametrize("kind", ["sync", "async", "list"])
async def test_escalation_callbacks_are_called(autojump_clock: trio.abc.Clock, kind: str) -> None:
    calls: list[tuple[str, Escalation]] = []

    def sync_cb(esc: Escalation) -> None:
        calls.append(("sync", esc))

    async def async_cb(esc: Escalation) -> None:
        await trio.sleep(0.1)
        calls.append(("async", esc))

    def sync_cb2(esc: Escalation) -> None:
        calls.append(("sync2", esc))

    on_escalation: object = {"sync": sync_cb, "async": async_cb, "list": [sync_cb, async_cb, sync_cb2]}[kind]
    hub = ActionHub(on_escalation=on_escalation)  # type: ignore[arg-type]
    error = Crash("boom")

    @hub.action("cb", max_attempts=1)
    async def cb(job: Job) -> None:
        if job.payload == "crash":
            raise error

    async with hub.running():
        await hub.publish("cb", "ok")
        await hub.publish("cb", "crash")
        await trio.sleep(1)
    expected = {"sync": ["sync"], "async": ["async"], "list": ["sync", "async", "sync2"]}[kind]
    assert [name for name, _ in calls] == expected
    for _, esc in calls:
        assert esc is calls[0][1]  # the same escalation, to every callback
    esc = calls[0][1]
    assert esc.group == "cb" and esc.reason == "panic" and esc.error is error
    assert "boom" in esc.traceback and "Crash" in esc.traceback
    assert esc.offending_message is not None and esc.offending_message.payload == "crash"
    assert esc.restarts == 1


async def test_two_actions_on_one_topic_each_get_every_message(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    got: dict[str, list[object]] = {"audit": [], "charge": []}

    for name in got:

        async def action(job: Job, name: str = name) -> None:
            got[name].append(job.payload)

        hub.bind(name, action, topic="orders")

    async with hub.running():
        for i in range(10):
            await hub.publish("orders", i)
        await trio.sleep(1)
        for name in got:
            stat = stat_of(hub, name)
            assert stat.topic == "orders"
            assert stat.total_message_received == 10 and stat.total_message_processed == 10
    assert sorted(got["audit"]) == list(range(10))  # type: ignore[type-var]
    assert sorted(got["charge"]) == list(range(10))  # type: ignore[type-var]


# --- callbacks never stall supervision


async def test_raising_and_hanging_callbacks_do_not_stall_supervision(autojump_clock: trio.abc.Clock) -> None:
    hang_started: list[float] = []
    hang_cut: list[float] = []
    raised: list[Escalation] = []
    recorded: list[tuple[float, Escalation]] = []

    async def hanging(esc: Escalation) -> None:
        hang_started.append(trio.current_time())
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            hang_cut.append(trio.current_time())
            raise

    def raising(esc: Escalation) -> None:
        raised.append(esc)
        raise RuntimeError("alerting is down")

    def recording(esc: Escalation) -> None:
        recorded.append((trio.current_time(), esc))

    hub = ActionHub(on_escalation=[hanging, raising, recording], escalation_timeout=5)
    processed_at: list[float] = []

    @hub.action("work", max_attempts=1, max_restarts=100)
    async def work(job: Job) -> None:
        if job.payload.startswith("crash"):
            raise Crash(job.payload)
        processed_at.append(trio.current_time())

    async with hub.running():
        t0 = trio.current_time()
        for i in range(3):
            await hub.publish("work", f"crash-{i}")
            await trio.sleep(0.5)
            await hub.publish("work", f"ok-{i}")
            await trio.sleep(0.5)
        # supervision went on while the first callback hung: every ok message ran at once,
        # every crashed worker was replaced
        assert [round(t - t0, 6) for t in processed_at] == [0.5, 1.5, 2.5]
        stat = stat_of(hub, "work")
        assert stat.total_restarts == 3 and stat.total_current_workers == 1
        await trio.sleep(20)
    # each escalation: the hanging callback is cut at escalation_timeout, then the others run
    assert [round(t - t0, 6) for t in hang_started] == [0, 5, 10]
    assert [round(t - t0, 6) for t in hang_cut] == [5, 10, 15]
    assert [str(e.error) for e in raised] == ["crash-0", "crash-1", "crash-2"]
    assert [round(t - t0, 6) for t, _ in recorded] == [5, 10, 15]
    assert [str(e.error) for _, e in recorded] == ["crash-0", "crash-1", "crash-2"]


# --- never panics


@pytest.mark.parametrize(
    ("work", "shutdown_timeout", "ends", "processed"),
    [(3, 10, "finished", 1), (1000, 2, "cancelled", 0)],
    ids=["finishes-within-timeout", "cancelled-at-timeout"],
)
async def test_graceful_stop_waits_for_in_flight_work_then_cancels_without_a_panic(
    autojump_clock: trio.abc.Clock,
    escalations: EscalationLog,
    work: float,
    shutdown_timeout: float,
    ends: str,
    processed: int,
) -> None:
    hub = ActionHub(on_escalation=escalations)
    outcome: list[tuple[str, float]] = []

    @hub.action("long", shutdown_timeout=shutdown_timeout)
    async def long(job: Job) -> None:
        try:
            await trio.sleep(work)
        except trio.Cancelled:
            outcome.append(("cancelled", trio.current_time()))
            raise
        outcome.append(("finished", trio.current_time()))

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        start = trio.current_time()
        await hub.publish("long", 1)
        await trio.sleep(1)
        await hub.stop()
    end = start + min(work, 1 + shutdown_timeout)
    assert trio.current_time() == pytest.approx(end)  # no longer than the work, at most the timeout
    assert outcome == [(ends, pytest.approx(end))]
    stat = stat_of(hub, "long")
    assert stat.total_panics == stat.total_failed == stat.total_restarts == 0
    assert stat.total_message_received == 1
    assert stat.total_message_processed == processed  # a cancelled message is neither counted nor acked
    assert stat.total_current_workers == stat.in_flight == 0
    assert escalations == []


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_keyboard_interrupt_and_system_exit_propagate_and_are_not_panics(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog, exc_type: type[BaseException]
) -> None:
    hub = ActionHub(on_escalation=escalations)
    panics_before: list[int] = []

    @hub.action("abort", max_attempts=1, behaviour=Behaviour.DO_NOTHING)
    async def abort(job: Job) -> None:
        if job.payload == "ok":
            return
        panics_before.append(stat_of(hub, "abort").total_panics)
        raise exc_type()

    with pytest.raises((exc_type, BaseExceptionGroup)) as info:
        async with hub.running():
            await hub.publish("abort", "ok")
            await trio.sleep(1)
            await hub.publish("abort", "abort")
            await trio.sleep(10)
    found = leaves(info.value)
    assert found and all(isinstance(e, exc_type) for e in found), found
    assert panics_before == [0]
    stat = stat_of(hub, "abort")
    assert stat.total_panics == 0 and stat.total_failed == 0
    assert stat.total_message_processed == 1
    assert escalations == []


# --- scaling and instances


async def test_a_burst_starts_workers_at_once_up_to_max_workers(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    seen = Seen()
    release = trio.Event()

    @hub.action("burst", min_workers=1, max_workers=4, buffer=20)
    async def burst(job: Job) -> None:
        seen.enter(job.payload)
        await release.wait()
        seen.leave(job.payload)

    async with hub.running():
        await trio.sleep(1)
        published_at = trio.current_time()
        for i in range(10):
            await hub.publish("burst", i)
        await trio.testing.wait_all_tasks_blocked()  # each worker, as it starts, starts the next
        stat = stat_of(hub, "burst")
        assert stat.total_current_workers == 4 and stat.total_created_workers == 4
        await trio.sleep(0.1)
        assert [t for _, _, t in seen.runs] == [published_at] * 4  # started at once, no waiting
        stat = stat_of(hub, "burst")
        assert stat.in_flight == 4 and stat.buffered == 6
        release.set()
        await trio.sleep(1)
        stat = stat_of(hub, "burst")
    assert seen.peak == 4
    assert stat.total_message_processed == 10
    assert stat.total_created_workers == 4


async def test_an_idle_worker_takes_the_message_instead_of_a_new_one(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    seen = Seen()

    @hub.action("calm", min_workers=1, max_workers=5)
    async def calm(job: Job) -> None:
        seen.enter(job.payload)
        await trio.sleep(0.5)
        seen.leave(job.payload)

    async with hub.running():
        for i in range(5):
            await hub.publish("calm", i)
            await trio.sleep(1)
        stat = stat_of(hub, "calm")
    assert len(seen.tasks) == 1
    assert stat.total_created_workers == 1 and stat.total_message_processed == 5


async def test_single_instance_is_one_worker_whatever_was_configured(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    seen = Seen()

    @hub.action("solo", instance=Instance.SINGLE, min_workers=3, max_workers=5, buffer=10)
    async def solo(job: Job) -> None:
        seen.enter(job.payload)
        await trio.sleep(1)
        seen.leave(job.payload)

    async with hub.running():
        stat = stat_of(hub, "solo")
        assert (stat.min_workers, stat.max_workers) == (1, 1)
        assert stat.instance is Instance.SINGLE and stat.total_current_workers == 1
        for i in range(5):
            await hub.publish("solo", i)
        await trio.sleep(10)
        stat = stat_of(hub, "solo")
    assert seen.peak == 1 and len(seen.tasks) == 1
    assert seen.done == [0, 1, 2, 3, 4]
    assert stat.total_created_workers == 1 and stat.total_message_processed == 5


async def test_one_time_workers_exit_after_one_message(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    seen = Seen()

    @hub.action("once", instance=Instance.ONE_TIME, min_workers=0, max_workers=3, max_idleness=1)
    async def once(job: Job) -> None:
        seen.enter(job.payload)
        seen.leave(job.payload)

    async with hub.running():
        for i in range(4):
            await hub.publish("once", i)
            await trio.sleep(5)
        stat = stat_of(hub, "once")
    assert len(seen.tasks) == 4  # a new worker for every message
    assert stat.total_created_workers == 4
    assert stat.total_message_processed == 4
    assert stat.total_current_workers == 0
    assert stat.total_restarts == 0 and stat.total_idled_workers == 0 and stat.total_killed_workers == 0


# --- stats


async def test_stats_snapshot_has_every_field_right(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    release = trio.Event()

    @hub.action(
        "snap",
        topic="snap.in",
        min_workers=2,
        max_workers=4,
        buffer=10,
        max_attempts=2,
        retry_backoff=(1.0, 1.0, 0.0),
        max_restarts=10,
    )
    async def snap(job: Job) -> None:
        if job.payload == "boom":
            raise Crash("boom")
        if job.payload == "reject":
            raise Reject("no")
        if job.payload == "hold":
            await release.wait()

    async with hub.running():
        for payload in ["ok", "ok", "ok", "boom", "reject"]:
            await hub.publish("snap.in", payload)
            await trio.sleep(0.5)
        await trio.sleep(3)  # "boom" is retried once after 1 s, panics again, is dead-lettered
        for _ in range(7):  # 4 run (2 idle workers + 2 new ones), 3 wait in the buffer
            await hub.publish("snap.in", "hold")
        await trio.sleep(0.1)
        stat = stat_of(hub, "snap")
        release.set()
        await trio.sleep(1)
        after = stat_of(hub, "snap")

    expected = {
        "addr": "snap",
        "topic": "snap.in",
        "instance": Instance.SCALING,
        "behaviour": Behaviour.RESTART_ONE,
        "max_workers": 4,
        "min_workers": 2,
        "total_message_received": 3 + 2 + 1 + 7,  # deliveries: the retry is delivered again
        "total_message_processed": 3,
        "total_panics": 2,
        "total_restarts": 2,
        "available_worker_capacity": 0,  # max_workers - in_flight
        "total_current_workers": 4,
        "total_created_workers": 2 + 2 + 2,  # min, two replacements, two for the burst
        "total_killed_workers": 2,  # the two panicked workers
        "total_idled_workers": 0,
        "buffered": 3,
        "in_flight": 4,
        "total_failed": 2,
        "total_retried": 1,
        "total_dead_lettered": 2,  # "boom" after max_attempts, "reject" at once
        "total_rejected": 1,
        "total_timeouts": 0,
        "total_overloaded": 0,
        "total_dropped": 0,
        "total_malformed": 0,
        # isolation="process" only: tests/test_process.py
        "processes_alive": 0,
        "total_processes_started": 0,
        "total_process_deaths": 0,
        "total_process_kills": 0,
        "total_process_recycles": 0,
        "partitions_owned": 0,
        "total_rebalances": 0,
        "total_throttled": 0,  # limits: tests/test_limits.py
        "rate_limit": None,
        "concurrency_limit": None,
        "state": GroupState.RUNNING,
        "cool_down_until": None,
    }
    actual = attrs.asdict(stat, recurse=False)
    # total_escalations: see test_total_escalations_counts_every_reported_escalation
    assert set(actual) == set(expected) | {"total_escalations"}
    del actual["total_escalations"]
    assert actual == expected
    assert (after.total_message_processed, after.in_flight, after.buffered) == (10, 0, 0)
    assert after.available_worker_capacity == 4


async def test_total_escalations_counts_every_reported_escalation(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    for behaviour in [Behaviour.RESTART_ONE, Behaviour.RESTART_ALL, Behaviour.DO_NOTHING]:
        _crasher(hub, behaviour.value, [], behaviour=behaviour)

    async with hub.running():
        for behaviour, _ in itertools.product(
            [Behaviour.RESTART_ONE, Behaviour.RESTART_ALL, Behaviour.DO_NOTHING], range(2)
        ):
            await hub.publish(behaviour.value, "crash")
            await trio.sleep(1)
        for stat in hub.stats():
            reported = [e for e in escalations if e.group == stat.addr]
            assert len(reported) == 2
            assert stat.total_escalations == len(reported), stat.addr


async def test_a_panic_during_graceful_stop_is_still_reported(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)

    @hub.action("late", max_attempts=1, shutdown_timeout=10)
    async def late(job: Job) -> None:
        await trio.sleep(2)
        raise Crash("failed while the hub was stopping")

    async with hub.running():
        await hub.publish("late", 1)
        await trio.sleep(1)  # leaving the block stops the hub; the action raises during the stop
    assert stat_of(hub, "late").total_panics == 1
    assert escalations.reasons() == ["panic"]
    (esc,) = escalations
    assert esc.group == "late" and isinstance(esc.error, Crash)
    assert esc.offending_message is not None and esc.offending_message.payload == 1
