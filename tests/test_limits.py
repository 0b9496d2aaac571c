"""Rate and concurrency limits on memory:// (one process, the trio clock; autojump_clock):
the rate and the concurrency hold, a held-back message waits without burning an attempt and is
counted once, a wait ended by a stop gives its slot and its message back, hubs on one MemoryBus
share the limits."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from actionhub import ActionHub, Behaviour, ConfigurationError, Escalation, Job, WorkerStat
from actionhub.bus.memory import MemoryBus
from actionhub.supervision.limits import LimitSpec, LocalLimiter, default_burst, parse_rate


def stat_of(hub: ActionHub, name: str) -> WorkerStat:
    (stat,) = [s for s in hub.stats() if s.addr == name]
    return stat


class Recorder:
    """An action that records when each run starts, how many run at once, and each attempt."""

    def __init__(self, work: float = 0.0) -> None:
        self.work = work
        self.starts: list[float] = []
        self.attempts: list[int] = []
        self.payloads: list[object] = []
        self.running = 0
        self.most = 0
        self.done = 0

    async def __call__(self, job: Job) -> None:
        self.starts.append(trio.current_time())
        self.attempts.append(job.attempt)
        self.payloads.append(job.payload)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await trio.sleep(self.work)
        finally:
            self.running -= 1
        self.done += 1


async def until(predicate: object, timeout: float = 3600) -> None:
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - the state changes in the hub's tasks
            await trio.sleep(0.01)


def test_rates_parse_and_bad_limits_fail_loudly() -> None:
    assert parse_rate("100/s") == 100
    assert parse_rate("30/m") == 0.5
    assert parse_rate(" 0.5 / h ") == pytest.approx(0.5 / 3600)
    assert default_burst(50) == 5 and default_burst(0.5) == 1
    hub = ActionHub()
    for bad in ("fast", "0/s", "10/d", "-1/s", "10"):
        with pytest.raises(ConfigurationError, match="rate_limit"):
            hub.bind(f"a{abs(hash(bad))}", Recorder(), rate_limit=bad)
    for bad_n in (0, -2, 1.5):
        with pytest.raises(ConfigurationError, match="concurrency_limit"):
            hub.bind(f"b{bad_n}", Recorder(), concurrency_limit=bad_n)


async def test_the_rate_holds_and_waiting_burns_no_attempt(autojump_clock: trio.testing.MockClock) -> None:
    hub = ActionHub()
    recorder = Recorder()
    hub.bind("calls", recorder, max_workers=5, rate_limit="10/s")  # burst 1: one every 0.1 s
    async with hub.running():
        for i in range(30):
            await hub.publish("calls", i)
        await until(lambda: recorder.done == 30)
        stat = stat_of(hub, "calls")
    gaps = [b - a for a, b in itertools.pairwise(recorder.starts)]
    assert min(gaps) == pytest.approx(0.1)
    assert recorder.starts[-1] - recorder.starts[0] == pytest.approx(2.9)
    assert recorder.attempts == [1] * 30
    assert stat.total_throttled == 29  # every message but the first waited, each counted once
    assert (stat.total_failed, stat.total_retried, stat.total_dead_lettered) == (0, 0, 0)
    assert (stat.rate_limit, stat.concurrency_limit) == ("10/s", None)


async def test_a_burst_passes_at_once_then_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    hub = ActionHub()
    recorder = Recorder()
    hub.bind("calls", recorder, max_workers=10, rate_limit="60/m", rate_burst=4)
    async with hub.running():
        for i in range(8):
            await hub.publish("calls", i)
        await until(lambda: recorder.done == 8)
    start = recorder.starts[0]
    assert [round(t - start, 6) for t in recorder.starts] == [0, 0, 0, 0, 1, 2, 3, 4]


async def test_the_concurrency_holds(autojump_clock: trio.testing.MockClock) -> None:
    hub = ActionHub()
    recorder = Recorder(work=1.0)
    hub.bind("calls", recorder, max_workers=10, concurrency_limit=3)
    async with hub.running():
        for i in range(20):
            await hub.publish("calls", i)
        await until(lambda: recorder.done == 20)
        stat = stat_of(hub, "calls")
    assert recorder.most == 3
    assert recorder.starts[-1] - recorder.starts[0] == pytest.approx(6.0)  # 7 rounds of 3
    assert stat.total_throttled == 17
    assert stat.concurrency_limit == 3 and stat.total_failed == 0
    assert recorder.attempts == [1] * 20


async def test_both_limits_at_once(autojump_clock: trio.testing.MockClock) -> None:
    hub = ActionHub()
    recorder = Recorder(work=0.35)
    hub.bind("calls", recorder, max_workers=10, rate_limit="10/s", concurrency_limit=2)
    async with hub.running():
        for i in range(12):
            await hub.publish("calls", i)
        await until(lambda: recorder.done == 12)
    assert recorder.most == 2
    assert min(b - a for a, b in itertools.pairwise(recorder.starts)) >= 0.1 - 1e-9


async def test_a_slot_is_given_back_however_the_run_ends(autojump_clock: trio.testing.MockClock) -> None:
    hub = ActionHub()
    seen: list[tuple[object, int]] = []

    async def flaky(job: Job) -> None:
        seen.append((job.payload, job.attempt))
        if job.payload == "panic" and job.attempt == 1:
            raise RuntimeError("boom")
        if job.payload == "slow":
            await trio.sleep(100)  # runs over its timeout

    hub.bind("calls", flaky, max_workers=4, concurrency_limit=1, max_attempts=2, timeout=1.0)
    async with hub.running():
        for payload in ("panic", "slow", "ok"):
            await hub.publish("calls", payload)
        await until(lambda: len(seen) == 5)  # panic twice, slow twice (then dead), ok once
        await until(lambda: stat_of(hub, "calls").in_flight == 0)
        limiter = hub.group("calls").runner.gate.limiter  # type: ignore[union-attr]
        assert isinstance(limiter, LocalLimiter)
        assert limiter.try_acquire()  # the one slot is free again
        limiter.release()
    assert sorted(seen) == [("ok", 1), ("panic", 1), ("panic", 2), ("slow", 1), ("slow", 2)]


async def test_a_cancelled_wait_gives_the_slot_back(autojump_clock: trio.testing.MockClock) -> None:
    limiter = LocalLimiter(LimitSpec(rate=1.0, burst=1, concurrency=1))
    assert limiter.try_acquire()
    limiter.release()
    assert not limiter.try_acquire()  # a slot, but no token for a second: the slot stays free
    held: list[int] = []
    with trio.move_on_after(0.5):
        await limiter.acquire(lambda: held.append(1))  # takes the slot, waits for the token
    assert held == [1]
    with trio.move_on_after(0.2):  # the slot came back: the wait is for the token alone
        assert limiter._slots is not None and limiter._slots.value == 1
        await limiter.acquire(lambda: None)
    await trio.sleep(0.5)
    assert limiter.try_acquire()


async def test_a_stop_while_waiting_puts_the_message_back_unstarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A restart of every worker while one run holds the only slot and others wait: the waiting
    ones go back to the buffer at once (not after shutdown_timeout), no attempt burned, nothing
    lost, and the slot of the run cancelled at shutdown_timeout is free again."""
    hub = ActionHub()
    recorder = Recorder(work=5.0)
    hub.bind(
        "calls",
        recorder,
        max_workers=4,
        concurrency_limit=1,
        behaviour=Behaviour.RESTART_ALL,
        shutdown_timeout=2.0,
    )
    async with hub.running():
        for i in range(4):
            await hub.publish("calls", i)
        await until(lambda: recorder.running == 1 and stat_of(hub, "calls").total_current_workers == 4)
        restarted_at = trio.current_time()
        hub.group("calls").restart()
        await until(lambda: len(recorder.starts) == 2)
        # the waiting runs left at once; the running one was cancelled at shutdown_timeout
        assert recorder.starts[1] - restarted_at == pytest.approx(2.0, abs=0.05)
        await until(lambda: recorder.done == 3, timeout=60)
        stat = stat_of(hub, "calls")
    assert recorder.most == 1
    # the waiting ones ran once each, at attempt 1, after the run cancelled at shutdown_timeout
    # (in process, unsettled: not run again; on Redis it would be reclaimed)
    assert recorder.attempts == [1] * 4
    assert stat.total_failed == 0 and stat.total_message_received == 4


async def test_two_hubs_on_one_bus_share_the_limits(autojump_clock: trio.testing.MockClock) -> None:
    bus = MemoryBus()
    recorder = Recorder(work=1.0)
    one, two = ActionHub(bus, name="one"), ActionHub(bus, name="two")
    for hub in (one, two):
        hub.bind("calls", recorder, max_workers=5, concurrency_limit=2, rate_limit="4/s")
    async with one.running(), two.running():
        for i in range(12):
            await one.publish("calls", i)
        await until(lambda: recorder.done == 12)
        ran = [stat_of(hub, "calls").total_message_processed for hub in (one, two)]
    assert recorder.most == 2
    assert all(count > 0 for count in ran) and sum(ran) == 12
    assert min(b - a for a, b in itertools.pairwise(sorted(recorder.starts))) >= 0.25 - 1e-9


async def test_a_group_without_limits_has_no_gate(autojump_clock: trio.testing.MockClock) -> None:
    hub = ActionHub()
    recorder = Recorder()
    hub.bind("calls", recorder)
    async with hub.running():
        await hub.publish("calls", 1)
        await until(lambda: recorder.done == 1)
        assert hub.group("calls").runner.gate is None
        stat = stat_of(hub, "calls")
    assert (stat.total_throttled, stat.rate_limit, stat.concurrency_limit) == (0, None, None)


async def test_the_limits_show_in_snapshots_the_cli_and_metrics(
    autojump_clock: trio.testing.MockClock,
) -> None:
    import orjson
    from rich.console import Console

    from actionhub.cli import stats_table
    from actionhub.inspect import HubSnapshot, snapshot_of
    from actionhub.metrics import HubMetrics

    hub = ActionHub(name="shop")
    metrics = HubMetrics(hub)
    recorder = Recorder(work=1.0)
    hub.bind("calls", recorder, max_workers=4, rate_limit="10/s", concurrency_limit=2)
    async with hub.running():
        for i in range(5):
            await hub.publish("calls", i)
        await until(lambda: recorder.done == 5)
        raw = snapshot_of(hub, 0.0).to_json()
        labels = {"hub": "shop", "group": "calls", "topic": "calls"}
        value = metrics.registry.get_sample_value
        assert value("actionhub_throttled_total", labels) == 4  # all but the first
        assert value("actionhub_rate_limit_per_second", labels) == 10.0
        assert value("actionhub_concurrency_limit", labels) == 2
    (stat,) = HubSnapshot.from_json(raw).groups  # as another process reads it
    assert (stat.total_throttled, stat.rate_limit, stat.concurrency_limit) == (4, "10/s", 2)
    document = orjson.loads(raw)
    for field in ("total_throttled", "rate_limit", "concurrency_limit"):  # a hub older than them
        del document["groups"][0][field]
    (old,) = HubSnapshot.from_json(orjson.dumps(document)).groups
    assert (old.total_throttled, old.rate_limit, old.concurrency_limit) == (0, None, None)
    console = Console(width=300)
    with console.capture() as captured:
        console.print(stats_table([HubSnapshot.from_json(raw)], "memory://", 0.0))
    header, row = captured.get().splitlines()[1:3]
    assert header.split()[-1] == "LIMITS"
    assert row.endswith("10/s, 2 at once (4 throttled)")


async def test_a_stop_does_not_wait_for_runs_held_back(autojump_clock: trio.testing.MockClock) -> None:
    """With one run an hour, a stop ends the waits at once: it takes no shutdown_timeout."""
    hub = ActionHub()
    recorder = Recorder()
    hub.bind("calls", recorder, max_workers=4, rate_limit="1/h", shutdown_timeout=30.0)
    async with hub.running():
        for i in range(4):
            await hub.publish("calls", i)
        await until(lambda: recorder.done == 1 and stat_of(hub, "calls").total_throttled == 3)
        stopping = trio.current_time()
        await hub.stop()
        assert trio.current_time() - stopping < 1.0
    assert recorder.done == 1


async def test_an_ordered_groups_waiting_run_keeps_its_place(autojump_clock: trio.testing.MockClock) -> None:
    """Ordered, one key, a restart while its next message waits for the rate: the message goes
    back first in line, at the same attempt, and the key's messages still run in order."""
    hub = ActionHub()
    recorder = Recorder()
    hub.bind("calls", recorder, max_workers=4, ordered=True, rate_limit="1/s")
    async with hub.running():
        for i in range(4):
            await hub.publish("calls", i, key="k")
        await until(lambda: recorder.done == 1)
        await trio.sleep(0.5)  # the second waits for its token
        hub.group("calls").restart()
        await until(lambda: recorder.done == 4)
    assert recorder.payloads == [0, 1, 2, 3] and recorder.attempts == [1] * 4
    assert [round(t - recorder.starts[0], 6) for t in recorder.starts] == [0, 1, 2, 3]


async def test_hubs_that_disagree_on_a_groups_limits_fail_loudly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two limits for one group on one bus would split it silently: the second hub is refused,
    naming both; once the first has stopped, the group may come back with other limits."""
    bus = MemoryBus()
    escalations: list[Escalation] = []
    one, two = ActionHub(bus, name="one"), ActionHub(bus, name="two", on_escalation=escalations.append)
    one.bind("calls", Recorder(), concurrency_limit=2, rate_limit="4/s")
    two.bind("calls", Recorder(), concurrency_limit=3, rate_limit="4/s")
    async with one.running(), two.running():
        pass
    (escalation,) = escalations  # the group does not start on the second hub
    assert escalation.reason == "start_failure" and isinstance(escalation.error, ConfigurationError)
    text = str(escalation.error)
    assert "concurrency_limit=2" in text and "concurrency_limit=3" in text, text
    recorder = Recorder()
    three = ActionHub(bus, name="three")
    three.bind("calls", recorder, concurrency_limit=3)
    async with three.running():
        await three.publish("calls", 1)
        await until(lambda: recorder.done == 1)


async def test_a_paused_group_starts_none_of_its_waiting_runs(autojump_clock: trio.testing.MockClock) -> None:
    """Runs waiting for the rate when the operator pauses the group give their deliveries back
    unstarted; they run on resume, at their first attempt."""
    hub = ActionHub()
    recorder = Recorder()
    hub.bind("calls", recorder, max_workers=3, rate_limit="1/s")
    async with hub.running():
        await hub.publish_many("calls", [0, 1, 2])
        await until(lambda: recorder.done == 1 and stat_of(hub, "calls").total_throttled == 2)
        group = hub.group("calls")
        group.pause()
        await trio.sleep(10)  # the rate would have let both start long ago
        assert recorder.payloads == [0] and len(group.inbox) == 2
        group.resume()
        await until(lambda: recorder.done == 3)
    # (the two given back may come back in either order: trio wakes the cancelled waits so)
    assert sorted(recorder.payloads) == [0, 1, 2] and recorder.attempts == [1, 1, 1]


async def test_a_delivery_put_back_by_a_cancelled_wait_wakes_an_idle_worker(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Ordered, one slot: worker 1 runs key a, worker 2 waits for the slot with b's first
    message, worker 3 is idle (b's second waits for its lane). Worker 2 is cancelled: its
    delivery goes back and worker 3 is woken for it at once, not by anything later (the clock
    stands still until the end: no timer of the hub wakes it)."""
    hub = ActionHub()
    release = trio.Event()

    async def calls(job: Job) -> None:
        await release.wait()

    hub.bind(
        "calls", calls, ordered=True, min_workers=1, max_workers=3, max_idleness=3600, concurrency_limit=1
    )
    async with hub.running():
        group = hub.group("calls")
        for payload, key in ((0, "a"), (1, "b"), (2, "b")):  # one at a time: worker n takes the nth
            await hub.publish("calls", payload, key=key)
            await trio.testing.wait_all_tasks_blocked()
        assert len(group.pool) == 3 and len(group.inbox) == 1 and group.runner.gate is not None
        assert group.runner.gate.throttled == 1
        group.pool._workers[2].scope.cancel()  # the waiting one
        await trio.testing.wait_all_tasks_blocked()
        assert group.runner.gate.throttled == 2  # worker 3 took b's first message and waits for the slot
        assert len(group.inbox) == 1
        release.set()
        mock_clock.autojump_threshold = 0
        await until(lambda: stat_of(hub, "calls").total_message_processed == 3, timeout=10)


async def test_an_escalation_hands_over_the_messages_that_waited_for_a_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """STOP_ALL_AND_ESCALATE while runs wait for the rate: their messages, given back unstarted
    as the workers stop, are among the escalation's pending messages (not left in the buffer)."""
    escalations: list[Escalation] = []
    hub = ActionHub(on_escalation=escalations.append)
    crash = trio.Event()

    async def fragile(job: Job) -> None:
        if job.payload == "crash":
            await crash.wait()
            raise RuntimeError("fatal")

    hub.bind(
        "fragile", fragile, max_workers=3, max_attempts=1, rate_limit="1/s",
        behaviour=Behaviour.STOP_ALL_AND_ESCALATE,
    )  # fmt: skip
    async with hub.running():
        await hub.publish_many("fragile", ["crash", "a", "b", "c"])
        await until(lambda: stat_of(hub, "fragile").total_throttled == 2)  # a and b wait, c is buffered
        crash.set()
        await until(lambda: len(escalations) == 1)
    (escalation,) = escalations
    assert sorted(str(m.payload) for m in escalation.pending_messages) == ["a", "b", "c"]
