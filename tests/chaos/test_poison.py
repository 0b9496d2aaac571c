"""Poison, flaky, crashing and hanging actions, and a slow escalation callback, in one hub beside a
healthy group that must never stall."""

from __future__ import annotations

import collections
import random
import time

import trio

from actionhub import ActionHub, Behaviour, Escalation, GroupState, Job
from actionhub.testing import EscalationLog, RedisServer
from tests.chaos.conftest import Figures, bus_url, scaled
from tests.chaos.harness import percentile, wait_for
from tests.polling import wait_until


async def test_poison_and_flaky_actions(chaos_redis: RedisServer, figures: Figures) -> None:
    healthy_total = scaled(300, 3_000)
    poison_total, flaky_total, hanging_total, crashy_total = 5, scaled(50, 500), 3, 4
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    escalations = EscalationLog()
    slow_calls = 0

    async def slow_callback(escalation: Escalation) -> None:
        nonlocal slow_calls
        slow_calls += 1
        await trio.sleep(10)  # far past escalation_timeout: cancelled each time

    hub = ActionHub(
        bus_url(chaos_redis.url),
        name="poisoned",
        on_escalation=[slow_callback, escalations],
        escalation_timeout=0.1,
    )
    healthy_latency: list[float] = []
    healthy_done_at: list[float] = []
    hanging_since: list[float] = []
    flaky_runs: collections.Counter[int] = collections.Counter()
    flaky_done: set[int] = set()
    fast_retries = {"retry_backoff": {"min": 0.05, "max": 0.2}}

    @hub.action("healthy", max_workers=4)
    async def healthy(job: Job) -> None:
        healthy_latency.append(time.time() - job.message.created_at)
        healthy_done_at.append(trio.current_time())

    @hub.action("poison", behaviour=Behaviour.DO_NOTHING, max_attempts=3, **fast_retries)
    async def poison(job: Job) -> None:
        raise ValueError(f"poison {job.payload}")

    @hub.action("flaky", max_workers=4, max_restarts=10_000, max_attempts=20, **fast_retries)
    async def flaky(job: Job) -> None:
        flaky_runs[job.payload] += 1
        if rng.random() < 0.3:
            raise ConnectionError("flaky dependency")
        flaky_done.add(job.payload)

    # past its limit it cools down (for longer than this test), handing back what it held
    @hub.action(
        "crashy", max_restarts=2, restart_window=60, max_attempts=100, cool_down=(600, 600), **fast_retries
    )
    async def crashy(job: Job) -> None:
        raise RuntimeError("crashes every time")

    @hub.action("hanging", behaviour=Behaviour.DO_NOTHING, timeout=0.5, max_attempts=2, **fast_retries)
    async def hanging(job: Job) -> None:
        hanging_since.append(trio.current_time())
        await trio.sleep_forever()

    async with hub.running():
        hanging_started = trio.current_time()
        for topic, count in (("poison", poison_total), ("flaky", flaky_total), ("hanging", hanging_total)):
            for i in range(count):
                await hub.publish(topic, i)
        for i in range(crashy_total):
            await hub.publish("crashy", i)
        for i in range(healthy_total):
            await hub.publish("healthy", i)
            await trio.sleep(0.005)
        await wait_until(lambda: len(healthy_latency) == healthy_total, timeout=60)

        async def settled() -> bool:
            poison_dead = await hub.dead_letters("poison", limit=1000)
            hanging_dead = await hub.dead_letters("hanging", limit=1000)
            return (
                len(poison_dead) == poison_total
                and len(hanging_dead) == hanging_total
                and len(flaky_done) == flaky_total
                and "max_restarts" in escalations.reasons()
            )

        await wait_for(settled, timeout=60, what="poison, hanging and flaky messages to settle")
        hanging_settled = trio.current_time()
        stats = {s.addr: s for s in hub.stats()}
        # the crashing group escalated and cools down, still bound; the rest run on
        assert stats["crashy"].state is GroupState.COOLING_DOWN
        assert stats["crashy"].total_current_workers == 0
        assert {"healthy", "poison", "flaky", "hanging"} <= stats.keys()
        assert stats["poison"].total_panics == 3 * poison_total
        assert stats["poison"].total_dead_lettered == poison_total
        assert stats["hanging"].total_timeouts == 2 * hanging_total
        assert stats["flaky"].total_message_processed == flaky_total
        assert all(run >= 1 for run in flaky_runs.values())
        for letter in await hub.dead_letters("poison", limit=1000):
            assert letter.reason == "max_attempts: failed 3 of 3 attempts"
            assert letter.error is not None and "ValueError('poison" in letter.error
        for letter in await hub.dead_letters("hanging", limit=1000):
            assert letter.error is not None and "timeout of 0.5s" in letter.error

        # the escalated group's messages were not lost: bound again, it runs every one of them
        crashy_done: set[int] = set()

        async def fixed(job: Job) -> None:
            crashy_done.add(job.payload)

        await hub.unbind("crashy")  # forget the cooling action, then bind the fixed one
        hub.bind("crashy", fixed)
        await wait_until(lambda: crashy_done == set(range(crashy_total)), timeout=60)

    max_restarts = [e for e in escalations if e.reason == "max_restarts"]
    assert len(max_restarts) == 1 and max_restarts[0].group == "crashy"
    assert hub._dispatcher.callback_errors == slow_calls  # every slow call cut at its timeout
    # while actions hung, healthy work went on
    hung = (min(hanging_since), max(hanging_since) + 0.5)
    assert any(hung[0] < done < hung[1] for done in healthy_done_at)
    figures["seed"] = seed
    figures["healthy messages, all processed"] = healthy_total
    figures["healthy latency p50 / p99 / max (ms)"] = " / ".join(
        f"{v * 1000:.1f}"
        for v in (percentile(healthy_latency, 50), percentile(healthy_latency, 99), max(healthy_latency))
    )
    figures["poison: dead-lettered after 3 attempts"] = poison_total
    figures["hanging: timeouts (0.5 s), then dead-lettered"] = (
        f"{stats['hanging'].total_timeouts}, {hanging_total}"
    )
    figures["flaky: processed / runs (30 % raise)"] = f"{flaky_total} / {sum(flaky_runs.values())}"
    figures["crashy: escalated max_restarts after panics"] = max_restarts[0].restarts
    figures["escalations delivered / slow callback cut"] = f"{len(escalations)} / {slow_calls}"
    figures["seconds from start to all settled"] = hanging_settled - hanging_started
