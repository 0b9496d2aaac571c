"""Steering live hubs: pause/resume/scale/restart of a group, snapshots and commands across hubs."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actionhub import ActionHub, ConfigurationError, Job, MemoryBus
from actionhub.inspect import HubSnapshot, hub_snapshots, redact, send_command


def _counting_hub(bus: MemoryBus, name: str, done: list[str], **config: object) -> ActionHub:
    hub = ActionHub(bus, name=name, announce_interval=1.0)

    @hub.action("work", **config)
    async def work(job: Job) -> None:
        await trio.sleep(1)
        done.append(job.payload)

    return hub


async def test_a_paused_group_takes_nothing_until_resumed(autojump_clock: trio.abc.Clock) -> None:
    done: list[str] = []
    hub = _counting_hub(MemoryBus(), "h", done, max_workers=2)
    async with hub.running():
        group = hub.group("work")
        group.pause()
        for i in range(3):
            await hub.publish("work", f"m{i}")
        await trio.sleep(10)
        stat = group.stats()
        assert done == [] and stat.buffered == 3 and stat.in_flight == 0
        group.resume()
        await trio.sleep(10)
    assert sorted(done) == ["m0", "m1", "m2"]


async def test_pause_lets_in_flight_work_finish(autojump_clock: trio.abc.Clock) -> None:
    done: list[str] = []
    hub = _counting_hub(MemoryBus(), "h", done)
    async with hub.running():
        await hub.publish("work", "first")
        await trio.sleep(0.5)  # started, sleeping inside the action
        hub.group("work").pause()
        await hub.publish("work", "second")
        await trio.sleep(10)
        assert done == ["first"]


async def test_scale_changes_the_bounds_of_a_running_group(autojump_clock: trio.abc.Clock) -> None:
    hub = _counting_hub(MemoryBus(), "h", [], min_workers=1, max_workers=2)
    async with hub.running():
        group = hub.group("work")
        group.scale(4, 8)
        await trio.sleep(0.1)
        stat = group.stats()
        assert (stat.min_workers, stat.max_workers, stat.total_current_workers) == (4, 8, 4)
        group.scale(0, 1)
        await trio.sleep(0.1)
        assert group.stats().total_current_workers == 1
        with pytest.raises(ConfigurationError):
            group.scale(3, 2)
        assert (group.stats().min_workers, group.stats().max_workers) == (0, 1)


async def test_scaling_down_lets_busy_workers_finish_their_message(autojump_clock: trio.abc.Clock) -> None:
    done: list[str] = []
    hub = _counting_hub(MemoryBus(), "h", done, max_workers=4)
    async with hub.running():
        for i in range(4):
            await hub.publish("work", i)
        await trio.sleep(0.5)
        hub.group("work").scale(0, 1)
        await trio.sleep(5)
        assert sorted(done) == [0, 1, 2, 3]
        assert hub.group("work").stats().total_current_workers <= 1


async def test_restart_replaces_every_worker(autojump_clock: trio.abc.Clock) -> None:
    hub = _counting_hub(MemoryBus(), "h", [], min_workers=2, max_workers=2)
    async with hub.running():
        group = hub.group("work")
        await trio.sleep(0.1)
        before = group.stats()
        group.restart()
        await trio.sleep(0.1)
        after = group.stats()
    assert after.total_restarts == before.total_restarts + 1
    assert after.total_created_workers == before.total_created_workers + 2
    assert after.total_current_workers == 2


async def test_every_live_hub_is_seen_and_a_stopped_one_drops_out(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    one, two = _counting_hub(bus, "one", []), _counting_hub(bus, "two", [])
    async with one.running():
        async with two.running():
            await one.publish("work", "x")
            await trio.sleep(3)
            snapshots = await hub_snapshots(bus)
            assert [s.hub for s in snapshots] == ["one", "two"]
            assert sum(s.groups[0].total_message_processed for s in snapshots) == 1
            assert HubSnapshot.from_json(snapshots[0].to_json()) == snapshots[0]
        assert [s.hub for s in await hub_snapshots(bus)] == ["one"]


async def test_a_hub_that_stops_announcing_expires(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    await bus.announce("ghost", HubSnapshot("ghost", "h", 1, "memory://", 0, 0, ()).to_json(), ttl=3)
    assert len(await hub_snapshots(bus)) == 1
    await trio.sleep(3.1)
    assert await hub_snapshots(bus) == []


async def test_commands_reach_every_hub_and_each_answers(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    one, two = _counting_hub(bus, "one", []), _counting_hub(bus, "two", [])
    async with one.running(), two.running():
        await trio.sleep(0.1)
        answers = await send_command(bus, "scale", "work", min_workers=2, max_workers=3)
        assert [(a.hub, a.outcome, a.detail) for a in answers] == [
            ("one", "applied", "scaled work to 2..3 workers"),
            ("two", "applied", "scaled work to 2..3 workers"),
        ]
        assert one.group("work").stats().max_workers == 3 == two.group("work").stats().max_workers
        answers = await send_command(bus, "pause", "work")
        assert all(a.ok for a in answers) and one.group("work").held and two.group("work").held
        await send_command(bus, "resume", "work")
        assert not one.group("work").held
        answers = await send_command(bus, "restart", "nope")
        assert [(a.outcome, a.detail) for a in answers] == [("absent", "no running group named 'nope'")] * 2
        answers = await send_command(bus, "scale", "work", min_workers=5, max_workers=1)
        assert {a.outcome for a in answers} == {"refused"} and "min_workers" in answers[0].detail


async def test_a_hub_that_does_not_answer_is_reported_silent(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    await bus.announce("ghost", HubSnapshot("ghost", "h", 1, "memory://", 0, 0, ()).to_json(), ttl=60)
    async with _counting_hub(bus, "one", []).running():
        await trio.sleep(0.1)
        answers = await send_command(bus, "pause", "work", timeout=2)
    assert [(a.hub, a.outcome) for a in answers] == [("ghost", "silent"), ("one", "applied")]


async def test_unknown_commands_are_refused_before_sending() -> None:
    with pytest.raises(ConfigurationError, match="unknown command"):
        await send_command(MemoryBus(), "explode", "work")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://ada:hunter2@h/0?prefix=app:", "redis://ada:***@h/0?prefix=app:"),
        ("redis://token@h/0", "redis://***@h/0"),
        ("https://h/hook?token=abc&x=1", "https://h/hook?token=***&x=1"),
        ("memory://", "memory://"),
    ],
)
def test_secrets_are_redacted_from_urls(url: str, shown: str) -> None:
    assert redact(url) == shown
