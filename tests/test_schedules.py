"""Schedules: the definition and its ticks (DST included, on injected times), the firing
decision, and hubs on memory:// under trio's MockClock; the Redis script against the same
decision. The multi-process Redis tests are in test_schedules_cluster.py."""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import orjson
import pytest
import redis
import trio
from cronsim import CronSim

from actionhub import ActionHub, ConfigurationError, HubStopped, Job, MemoryBus, Message, Schedule
from actionhub.bus.base import Bus
from actionhub.bus.redis.common import RedisBusBase
from actionhub.bus.redis.streams import RedisStreamsBus
from actionhub.bus.ticks import ScheduleState, Tick, TicksFired, decide
from actionhub.bus.url import open_bus
from actionhub.cli._schedules import ScheduleRow, schedule_rows
from actionhub.inspect import HubSnapshot, hub_snapshots, snapshot_of
from actionhub.scheduling import MAX_CATCH_UP, ScheduleInfo
from actionhub.testing import RedisServer
from tests.polling import wait_until

README = Path(__file__).parents[1] / "README.md"
NEW_YORK, LONDON = ZoneInfo("America/New_York"), ZoneInfo("Europe/London")


def ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def forward(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    ticks, at = [], ms(start)
    for _ in range(count):
        at = schedule.next_tick(at)
        ticks.append(datetime.fromtimestamp(at / 1000, tz=UTC))
    return ticks


# --------------------------------------------------------------------------- the definition


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (dict(), "exactly one of cron= and every="),
        (dict(cron="* * * * *", every=1), "exactly one of cron= and every="),
        (dict(every=0), "every must be > 0"),
        (dict(every=-5), "every must be > 0"),
        (dict(every=timedelta(0)), "every must be > 0"),
        (dict(every="1"), "every must be seconds"),
        (dict(every=1, tz="Mars/Olympus"), "unknown time zone"),
        (dict(cron="0 3 * *"), "5-field"),
        (dict(cron="0 0 3 * * *"), "5-field"),
        (dict(cron="61 3 * * *"), "invalid cron expression"),
        (dict(cron="0 3 * * *", catch_up="some"), "catch_up must be one of"),
        (dict(every=1, jitter=-1), "jitter must be seconds >= 0"),
        (dict(every=1, payload={1, 2}), "payload must be JSON"),
        (dict(every=1, topic="no spaces"), "invalid topic"),
        (dict(every=1, name=""), "name must be"),
    ],
)
def test_a_bad_definition_fails_with_a_clear_message(options: dict[str, object], says: str) -> None:
    arguments: dict[str, object] = {"name": "job", "topic": "jobs", **options}
    with pytest.raises(ConfigurationError, match=says):
        Schedule(**arguments)  # type: ignore[arg-type]


def test_every_ticks_are_aligned_to_the_epoch_whenever_a_hub_starts() -> None:
    schedule = Schedule("job", "jobs", every=timedelta(minutes=15))
    assert schedule.every_ms == 900_000 and schedule.period == "every 900s"
    assert schedule.next_tick(ms(utc(2026, 12, 7, 12, 7, 31))) == ms(utc(2026, 12, 7, 12, 15))
    assert schedule.next_tick(ms(utc(2026, 12, 7, 12, 15))) == ms(utc(2026, 12, 7, 12, 30))  # strictly after
    ticks, left_out = schedule.ticks_between(ms(utc(2026, 12, 7, 11)), ms(utc(2026, 12, 7, 12)), cap=100)
    assert ticks == [ms(utc(2026, 12, 7, 11, m)) for m in (15, 30, 45)] + [ms(utc(2026, 12, 7, 12))]
    assert left_out == 0
    ticks, left_out = schedule.ticks_between(ms(utc(2026, 12, 6)), ms(utc(2026, 12, 7)), cap=10)
    assert len(ticks) == 10 and ticks[-1] == ms(utc(2026, 12, 7)) and left_out == 96 - 10


def test_cron_across_the_spring_forward_in_new_york() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT: 02:30 does not exist that day
    schedule = Schedule("job", "jobs", cron="30 2 * * *", tz="America/New_York")
    ticks = forward(schedule, datetime(2026, 3, 6, 12, tzinfo=NEW_YORK), 3)
    # 02:30 EST, then the first time after the gap (03:00 EDT), then 02:30 EDT
    assert ticks == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]


def test_cron_across_the_fall_back_in_new_york() -> None:
    # 2026-11-01 01:00-02:00 happens twice (EDT, then EST): a daily 01:30 runs once
    daily = Schedule("job", "jobs", cron="30 1 * * *", tz="America/New_York")
    ticks = forward(daily, datetime(2026, 10, 31, 12, tzinfo=NEW_YORK), 2)
    assert ticks == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    # a job more often than hourly keeps to the wall clock through both copies of the hour
    half_hourly = Schedule("job", "jobs", cron="*/30 * * * *", tz="America/New_York")
    ticks = forward(half_hourly, datetime(2026, 11, 1, 0, 10, tzinfo=NEW_YORK), 5)
    assert ticks == [utc(2026, 11, 1, 4, 30) + timedelta(minutes=30 * i) for i in range(5)]


def test_cron_across_both_changes_in_london() -> None:
    daily = Schedule("job", "jobs", cron="30 1 * * *", tz="Europe/London")
    # 2026-03-29 01:00 GMT jumps to 02:00 BST: 01:30 runs at 02:00 BST
    assert forward(daily, datetime(2026, 3, 27, 12, tzinfo=LONDON), 3) == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
    ]
    # 2026-10-25 02:00 BST falls back to 01:00 GMT: 01:30 runs once, at its first occurrence
    assert forward(daily, datetime(2026, 10, 24, 12, tzinfo=LONDON), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


# a daily 01:30 where 01:00-02:00 happens twice: the repeated hour, its first copy before it
REPEATED_HOURS = [
    ("Europe/London", utc(2026, 10, 25, 0), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
    ("America/New_York", utc(2026, 11, 1, 5), [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
]


@pytest.mark.parametrize(("tz", "first_copy", "daily"), REPEATED_HOURS)
def test_the_next_tick_is_never_in_the_past_through_a_repeated_hour(
    tz: str, first_copy: datetime, daily: list[datetime]
) -> None:
    """cronsim, started in the second copy of the hour (before :30), returns the first copy's
    01:30, an hour in the past: never the next tick."""
    schedule = Schedule("job", "jobs", cron="30 1 * * *", tz=tz)
    minutes = range(ms(first_copy) - 3_600_000, ms(first_copy) + 3 * 3_600_000, 60_000)
    nexts = [schedule.next_tick(at) for at in minutes]
    assert all(tick > at for tick, at in zip(nexts, minutes, strict=True))
    assert nexts == sorted(nexts) and sorted(set(nexts)) == [ms(t) for t in daily]
    # counting back from any of those minutes agrees: the newest tick at or before it
    for at in minutes:
        newest = next(schedule.ticks_back(at))
        assert newest <= at < schedule.next_tick(newest) and schedule.next_tick(newest - 1) == newest


@pytest.mark.parametrize(
    ("cron", "tz", "start"),
    [
        ("30 2 * * *", "America/New_York", datetime(2026, 3, 1, tzinfo=UTC)),
        ("*/30 * * * *", "America/New_York", datetime(2026, 10, 31, 20, tzinfo=UTC)),
        ("30 1 * * *", "Europe/London", datetime(2026, 10, 20, tzinfo=UTC)),
        ("0 9 * * MON-FRI", "Asia/Kolkata", datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_counting_back_finds_the_ticks_counting_forward_finds(cron: str, tz: str, start: datetime) -> None:
    schedule = Schedule("job", "jobs", cron=cron, tz=tz)
    ahead = [ms(t) for t in forward(schedule, start, 30)]
    ticks, left_out = schedule.ticks_between(ms(start), ahead[-1], cap=100)
    assert ticks == ahead and left_out == 0
    ticks, left_out = schedule.ticks_between(ms(start), ahead[-1], cap=7)
    assert ticks == ahead[-7:] and left_out == 23


@pytest.mark.parametrize(
    ("until", "newest"), [(0, 0), (1, 0), (500, 0), (59_999, 0), (-1, -60_000), (60_000, 60_000)]
)
def test_counting_back_from_any_millisecond(until: int, newest: int) -> None:
    schedule, base = Schedule("job", "jobs", cron="* * * * *"), ms(utc(2026, 1, 1, 3))
    ticks = list(itertools.islice(schedule.ticks_back(base + until), 3))
    assert ticks == [base + newest - 60_000 * i for i in range(3)]


def test_the_digest_changes_with_what_is_owed_only() -> None:
    base = Schedule("job", "jobs", every=60, payload={"a": 1})
    assert base.digest == Schedule("job", "jobs", every=timedelta(minutes=1), payload={"a": 1}).digest
    assert base.digest == Schedule("job", "jobs", every=60, payload={"a": 1}, catch_up="all", jitter=5).digest
    for other in (
        Schedule("job", "jobs", every=61, payload={"a": 1}),
        Schedule("job", "other", every=60, payload={"a": 1}),
        Schedule("job", "jobs", every=60, payload={"a": 2}),
        Schedule("job", "jobs", cron="* * * * *", payload={"a": 1}),
    ):
        assert other.digest != base.digest


def test_jitter_is_the_same_on_every_hub_and_never_reaches_the_next_tick() -> None:
    schedule = Schedule("job", "jobs", every=10, jitter=4)
    delays = [schedule.delay(tick) for tick in range(0, 1_000_000, 10_000)]
    assert delays == [
        Schedule("job", "jobs", every=10, jitter=4).delay(t) for t in range(0, 1_000_000, 10_000)
    ]
    assert all(0 <= d < 4000 for d in delays) and len(set(delays)) > 50
    assert [
        Schedule("other", "jobs", every=10, jitter=4).delay(t) for t in range(0, 100_000, 10_000)
    ] != delays[:10]
    wide = Schedule("job", "jobs", every=10, jitter=3600)  # clamped: tick order is kept
    assert all(wide.delay(t) < 10_000 for t in range(0, 1_000_000, 10_000))
    assert Schedule("job", "jobs", every=10).delay(10_000) == 0


# --------------------------------------------------------------------------- the decision


def test_the_decision_for_each_catch_up() -> None:
    now = 100_000
    fresh = decide(None, "d", "latest", [], now)
    assert fresh == ([], now, True, 0)  # nothing before now is owed to a new schedule
    missed = [(t, True) for t in (10_000, 20_000, 30_000)] + [(40_000, False)]
    stored = ("d", 5_000)
    assert decide(stored, "d", "latest", missed, now) == ([2, 3], 40_000, False, 0)
    assert decide(stored, "d", "all", missed, now) == ([0, 1, 2, 3], 40_000, False, 0)
    assert decide(stored, "d", "none", missed, now) == ([3], 40_000, False, 0)
    # fired already (by another hub) or in the future: not published
    assert decide(("d", 20_000), "d", "all", missed, now) == ([2, 3], 40_000, False, 0)
    assert decide(stored, "d", "all", [(90_000, False), (200_000, False)], now) == ([0], 90_000, False, 1)
    # another definition's state: its last is the floor; of the ticks after it, those not overdue
    # and the newest (no catch-up of what the other definition owed); the state becomes this one's
    assert decide(("other", 5_000), "d", "all", missed, now) == ([3], 40_000, True, 0)
    assert decide(("other", 5_000), "d", "none", [(10_000, True), (20_000, True)], now) == (
        [1],
        20_000,
        True,
        0,
    )
    on_time = [(10_000, False), (20_000, False), (30_000, False)]
    assert decide(("other", 5_000), "d", "none", on_time, now) == ([0, 1, 2], 30_000, True, 0)
    assert decide(("other", 20_000), "d", "none", on_time, now) == ([2], 30_000, True, 0)
    assert decide(("other", 30_000), "d", "latest", on_time, now) == (
        [],
        30_000,
        True,
        0,
    )  # fired by the other
    assert decide(("other", 30_000), "d", "latest", [], now) == ([], now, True, 0)  # a read: starts at now


# --------------------------------------------------------------------------- hubs on memory://


class Received:
    """What an action on a schedule's topic saw: (bus time at the run, headers, payload)."""

    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus
        self.messages: list[tuple[float, dict[str, str], object]] = []

    async def __call__(self, job: Job) -> None:
        self.messages.append((self.bus.now(), dict(job.message.headers), job.payload))

    def ticks(self) -> list[float]:
        return [datetime.fromisoformat(h["scheduled_at"]).timestamp() for _, h, _ in self.messages]

    def caught_up(self) -> list[float]:
        return [
            t for t, (_, h, _) in zip(self.ticks(), self.messages, strict=True) if "schedule_catch_up" in h
        ]


def memory_bus(start: datetime | None = None) -> MemoryBus:
    """A memory bus whose clock starts at ``start`` (or now) and moves with trio's."""
    bus = MemoryBus()
    base = (start or datetime.now(UTC)).timestamp() - trio.current_time()
    bus.wall_clock = lambda: base + trio.current_time()
    return bus


async def test_every_fires_each_tick_once_across_hubs_sharing_a_bus(autojump_clock: trio.abc.Clock) -> None:
    bus = memory_bus(utc(2026, 12, 7, 12, 0, 0, 300_000))
    received = Received(bus)
    hubs = [ActionHub(bus, name=f"hub-{i}") for i in range(3)]
    for hub in hubs:
        hub.schedule("beat", topic="beats", every=1, payload={"n": 1})
    hubs[0].action("beats")(received)
    async with hubs[0].running(), hubs[1].running(), hubs[2].running():
        await trio.sleep(10)
    ticks = received.ticks()
    assert ticks == [utc(2026, 12, 7, 12, 0, s).timestamp() for s in range(1, 11)]
    assert all(payload == {"n": 1} for _, _, payload in received.messages)
    assert all(h["schedule"] == "beat" for _, h, _ in received.messages)
    assert all(at - tick < 0.01 for (at, _, _), tick in zip(received.messages, ticks, strict=True))


async def test_cron_fires_across_the_spring_forward(autojump_clock: trio.abc.Clock) -> None:
    bus = memory_bus(datetime(2026, 3, 6, 12, tzinfo=NEW_YORK))
    received = Received(bus)
    hub = ActionHub(bus, announce_interval=86_400)  # three days go by: few wake-ups
    hub.schedule("early", topic="early", cron="30 2 * * *", tz="America/New_York")
    hub.action("early")(received)
    async with hub.running():
        await trio.sleep(3 * 86_400)
    assert received.ticks() == [
        t.timestamp() for t in (utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30))
    ]


def _unfiltered_next_tick(self: Schedule, after: int) -> int:
    """cronsim's first answer, as next_tick once was: in the past within a repeated hour."""
    assert self.cron is not None
    moment = next(iter(CronSim(self.cron, datetime.fromtimestamp(after / 1000, tz=self.zone))))
    return round(moment.timestamp() * 1000)


@pytest.mark.parametrize("guard", [False, True])
@pytest.mark.parametrize(("tz", "first_copy", "daily"), REPEATED_HOURS)
async def test_a_schedule_starting_in_the_repeated_hour_waits_for_its_next_tick(
    autojump_clock: trio.abc.Clock,
    monkeypatch: pytest.MonkeyPatch,
    tz: str,
    first_copy: datetime,
    daily: list[datetime],
    guard: bool,
) -> None:
    """Started afresh in the second copy of the hour (before :30), the scheduler does not spin on
    the first copy's 01:30: it waits for the next day's, then the day after's. ``guard``: with a
    next_tick that answers a tick in the past, the scheduler's own guard steps past it."""
    if guard:
        monkeypatch.setattr(Schedule, "next_tick", _unfiltered_next_tick)
    bus = memory_bus(first_copy + timedelta(hours=1, minutes=10))
    received = Received(bus)
    calls = 0
    fire_ticks = bus.fire_ticks

    async def counted(*args: Any, **kwargs: Any) -> TicksFired:
        nonlocal calls
        calls += 1
        if calls > 1_000:  # spinning: stop it, so that the assertion below says so
            spinning.cancel()
        return await fire_ticks(*args, **kwargs)

    bus.fire_ticks = counted  # type: ignore[method-assign]
    hub = ActionHub(bus, announce_interval=86_400)
    hub.schedule("nightly", topic="nightly", cron="30 1 * * *", tz=tz)
    hub.action("nightly")(received)
    with trio.CancelScope() as spinning:
        async with hub.running():
            await trio.sleep(2 * 86_400 + 3_600)
    assert calls <= 10
    assert received.ticks() == [daily[1].timestamp(), (daily[1] + timedelta(days=1)).timestamp()]


async def _run_hub(
    bus: MemoryBus, received: Received, seconds: float, every: float = 1, **options: object
) -> None:
    hub = ActionHub(bus)
    hub.schedule("beat", topic="beats", every=every, **options)  # type: ignore[call-overload]
    hub.action("beats")(received)
    async with hub.running():
        await trio.sleep(seconds)


@pytest.mark.parametrize("catch_up", ["latest", "all", "none"])
async def test_catch_up_after_every_hub_was_down(autojump_clock: trio.abc.Clock, catch_up: str) -> None:
    bus = memory_bus(utc(2026, 12, 7, 12, 0, 0, 500_000))
    received = Received(bus)
    await _run_hub(bus, received, 3, catch_up=catch_up)  # ticks 1, 2, 3
    await trio.sleep(5)  # no hub: ticks 4 to 8 are missed (the restart comes at 8.5)
    await _run_hub(bus, received, 3, catch_up=catch_up)
    seconds = [round(t - utc(2026, 12, 7, 12).timestamp()) for t in received.ticks()]
    caught_up = [round(t - utc(2026, 12, 7, 12).timestamp()) for t in received.caught_up()]
    # 8 is within a second of the restart: not missed but due (a live hub would be firing it)
    expected = {
        "latest": [1, 2, 3, 7, 8, 9, 10, 11],
        "all": list(range(1, 12)),
        "none": [1, 2, 3, 8, 9, 10, 11],
    }
    assert seconds == expected[catch_up]
    assert caught_up == {"latest": [7], "all": [4, 5, 6, 7], "none": []}[catch_up]


@pytest.mark.parametrize(("back_at", "published"), [(20, [60, 120, 180]), (45, [60, 180])])
async def test_a_tick_counts_as_missed_past_half_its_period(
    autojump_clock: trio.abc.Clock, back_at: int, published: list[int]
) -> None:
    """every=60, catch_up="none": a hub back 20 s after a tick fires it (a short outage is not a
    miss); back 45 s after, the tick was missed and is skipped."""
    start = utc(2026, 12, 7, 12)
    bus = memory_bus(start + timedelta(seconds=0.5))
    received = Received(bus)
    await _run_hub(bus, received, 61, every=60, catch_up="none")  # the tick at 60
    await trio.sleep(120 + back_at - 61.5)
    await _run_hub(bus, received, 200 - 120 - back_at, every=60, catch_up="none")
    assert [round(t - start.timestamp()) for t in received.ticks()] == published
    assert received.caught_up() == []


async def test_catch_up_all_is_capped(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    bus = memory_bus(utc(2026, 12, 7, 12, 0, 0, 500_000))
    received = Received(bus)
    await _run_hub(bus, received, 1, catch_up="all")
    await trio.sleep(500)
    await _run_hub(bus, received, 0.1, catch_up="all")
    assert len(received.ticks()) == 1 + MAX_CATCH_UP  # the newest 100 of the 500 since: 99 missed, 1 due
    assert len(received.caught_up()) == MAX_CATCH_UP - 1
    assert received.caught_up()[-1] == utc(2026, 12, 7, 12, 8, 20).timestamp()  # newest missed, at 501 - 1
    assert "older missed tick(s)" in caplog.text and "dropped" in caplog.text


async def test_a_hub_ahead_of_the_bus_clock_is_refused_and_corrects_itself(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The bus's clock steps back 5 s (say, Redis failed over to a server whose clock is behind):
    the hub's next tick is in the bus's future, refused; the hub learns the new offset from the
    answer and fires it when it is due there. No tick twice, none lost."""
    bus = MemoryBus()
    base = utc(2026, 12, 7, 12, 0, 0, 500_000).timestamp() - trio.current_time()
    started = trio.current_time()
    bus.wall_clock = lambda: base + trio.current_time() - (5 if trio.current_time() - started > 4 else 0)
    received = Received(bus)
    await _run_hub(bus, received, 14)
    seconds = [round(t - utc(2026, 12, 7, 12).timestamp()) for t in received.ticks()]
    assert seconds == list(range(1, 10))  # 1 to 4, then 5 to 9 on the bus's clock, 5 s later
    assert all(at - tick < 0.01 for (at, _, _), tick in zip(received.messages, received.ticks(), strict=True))


async def test_jitter_delays_each_tick_as_every_hub_computes_it(autojump_clock: trio.abc.Clock) -> None:
    bus = memory_bus(utc(2026, 12, 7, 12))
    received = Received(bus)
    await _run_hub(bus, received, 100, jitter=0.8)
    schedule = Schedule("beat", "beats", every=1, jitter=0.8)
    delays = [at - tick for (at, _, _), tick in zip(received.messages, received.ticks(), strict=True)]
    expected = [schedule.delay(round(tick * 1000)) / 1000 for tick in received.ticks()]
    assert len(delays) >= 99 and delays == pytest.approx(expected, abs=0.002)
    assert max(delays) < 0.8 and len({round(d, 3) for d in delays}) > 50


async def test_a_changed_definition_starts_afresh(autojump_clock: trio.abc.Clock) -> None:
    bus = memory_bus(utc(2026, 12, 7, 12, 0, 0, 500_000))
    received = Received(bus)
    await _run_hub(bus, received, 3, payload={"v": 1})
    await trio.sleep(5)
    await _run_hub(bus, received, 3, payload={"v": 2})
    assert [p for _, _, p in received.messages] == [{"v": 1}] * 3 + [{"v": 2}] * 3  # no catch-up
    assert received.caught_up() == []
    assert received.ticks()[3] == utc(2026, 12, 7, 12, 0, 9).timestamp()  # the first tick after the restart


async def test_two_definitions_live_at_once_publish_each_tick_once(autojump_clock: trio.abc.Clock) -> None:
    """A rolling deploy: hubs of the old and the new definition run at once, each offering every
    tick; whichever offers a tick first publishes it, the other finds it fired."""
    bus = memory_bus(utc(2026, 12, 7, 12, 0, 0, 500_000))
    received = Received(bus)
    old, new = ActionHub(bus), ActionHub(bus)
    old.schedule("beat", topic="beats", every=1, payload="old")
    new.schedule("beat", topic="beats", every=1, payload="new", jitter=0.5)  # takes turns with old
    old.action("beats")(received)
    async with old.running(), new.running():
        await trio.sleep(20)
    assert received.ticks() == [utc(2026, 12, 7, 12, 0, s).timestamp() for s in range(1, 21)]
    assert {p for _, _, p in received.messages} == {"old"}  # old (no jitter) offers each first
    assert received.caught_up() == []


async def _alternate(bus: Bus, base: int) -> list[int]:
    """Two definitions' hubs offering ticks 1 to 10 s after ``base``, in turns and in either
    order: the ticks published."""
    published: list[int] = []
    for second in range(1, 11):
        order = ["old", "new"] if second % 3 else ["new", "old"]
        for digest in order:
            fired = await bus.fire_ticks("beat", digest, "latest", [_tick(base + second * 1000)])
            published += fired.published
    return published


async def test_two_definitions_taking_turns_publish_each_tick_once(redis_url: str) -> None:
    redis_bus = open_bus(redis_url)
    assert isinstance(redis_bus, RedisStreamsBus)
    async with redis_bus.open("test", serving=False):
        start = await redis_bus.fire_ticks("probe", "old", "latest", [])  # Redis's clock
        base = start.last - 20_000
        await redis_bus.fire_ticks("beat", "old", "latest", [_tick(base)])
        on_redis = await _alternate(redis_bus, base)
    memory = MemoryBus()
    memory.wall_clock = lambda: start.now
    await memory.fire_ticks("beat", "old", "latest", [_tick(base)])
    on_memory = await _alternate(memory, base)
    assert on_redis == on_memory == [base + second * 1000 for second in range(1, 11)]


async def test_the_decorator_takes_the_actions_topic(autojump_clock: trio.abc.Clock) -> None:
    bus = memory_bus(utc(2026, 12, 7, 12, 0, 0, 500_000))
    received = Received(bus)
    hub, other = ActionHub(bus), ActionHub(bus)
    with pytest.raises(ConfigurationError, match=r"above @hub\.action"):

        @other.action("late")
        @other.schedule("wrong-order", every=60)
        async def late(job: Job) -> None: ...

    with pytest.raises(ConfigurationError, match="exactly one of cron= and every="):
        other.schedule("neither")

    @hub.schedule("nightly", every=60, payload={"kind": "report"})
    @hub.action("report", topic="reports")
    async def report(job: Job) -> None:
        await received(job)

    assert [s.topic for s in hub.schedules.infos()] == ["reports"]
    async with hub.running():
        await trio.sleep(120)
    assert [p for _, _, p in received.messages] == [{"kind": "report"}] * 2


async def test_declaring_while_running_and_after_the_stop(autojump_clock: trio.abc.Clock) -> None:
    bus = memory_bus(utc(2026, 12, 7, 12, 0, 0, 500_000))
    received = Received(bus)
    hub = ActionHub(bus, announce_interval=0.5)
    hub.action("beats")(received)
    async with hub.running():
        await trio.sleep(2)
        assert received.messages == []
        hub.schedule("beat", topic="beats", every=1)  # the hub's scheduler starts with it
        with pytest.raises(ConfigurationError, match="already declared"):
            hub.schedule("beat", topic="beats", every=2)
        await trio.sleep(3)
        (snapshot,) = await hub_snapshots(bus)
    assert len(received.messages) == 3
    (info,) = snapshot.schedules
    assert (info.name, info.topic, info.every, info.catch_up) == ("beat", "beats", 1.0, "latest")
    assert info.last is not None and info.next == info.last + 1
    (state,) = (await bus.schedule_states()).values()
    assert state.digest == info.digest and state.last == state.fired
    assert state.last >= info.last * 1000  # the snapshot is up to 0.5 s old
    with pytest.raises(HubStopped):
        hub.schedule("another", topic="beats", every=1)


async def test_a_tick_memory_could_not_deliver_is_owed_again() -> None:
    """A tick whose delivery fails (here: too large; also Overloaded, or cancelled at the stop)
    is not recorded as fired: the next offer publishes it. The ticks delivered before it stay
    fired."""
    bus = MemoryBus(max_message_bytes=100)
    bus.wall_clock = lambda: 1_000.0
    big = Tick(500_000, Message("beats", "x" * 200, id="schedule:beat:500000"))
    with pytest.raises(ValueError, match="over the limit"):
        await bus.fire_ticks("beat", "d", "latest", [big])
    assert await bus.schedule_states() == {}  # as before the call: no state
    fired = await bus.fire_ticks("beat", "d", "latest", [_tick(500_000)])
    assert fired.published == (500_000,)
    big = attrs.evolve(big, at=700_000)
    with pytest.raises(ValueError, match="over the limit"):
        await bus.fire_ticks("beat", "d", "latest", [_tick(600_000), big, _tick(800_000)])
    assert await bus.schedule_states() == {"beat": ScheduleState("d", 699_999, 600_000)}
    fired = await bus.fire_ticks("beat", "d", "latest", [_tick(t) for t in (600_000, 700_000, 800_000)])
    assert fired.published == (700_000, 800_000)


@pytest.mark.parametrize("transport", ["memory", "redis"])
async def test_a_payload_too_large_for_the_bus_fails_when_declared(transport: str, redis_url: str) -> None:
    """Not at every tick, forever (on Redis the envelope could never be encoded)."""
    bus = (
        MemoryBus(max_message_bytes=1_000)
        if transport == "memory"
        else open_bus(redis_url + "&max_message_bytes=1000")
    )
    hub = ActionHub(bus)
    hub.schedule("small", topic="beats", every=1, payload="x" * 500)
    with pytest.raises(
        ConfigurationError, match=r"schedule 'big' cannot publish its payload: .*over the limit"
    ):
        hub.schedule("big", topic="beats", every=1, payload="x" * 1_000)
    assert [info.name for info in hub.schedules.infos()] == ["small"]
    # declared on another bus, then moved to this one: the hub does not start
    moved = ActionHub(MemoryBus())
    moved.schedule("big", topic="beats", every=1, payload="x" * 1_000)
    moved.configure(bus=bus)
    with pytest.raises(ConfigurationError, match="cannot publish its payload"):
        async with moved.running():
            pass


def test_an_old_snapshot_without_schedules_still_decodes() -> None:
    old = {"hub": "h", "host": "x", "pid": 1, "bus": "memory://", "started_at": 1.0, "at": 2.0, "groups": []}
    snapshot = HubSnapshot.from_json(orjson.dumps(old))
    assert snapshot.schedules == ()
    assert HubSnapshot.from_json(snapshot.to_json()) == snapshot


async def test_a_newer_hubs_snapshot_decodes_without_its_new_fields() -> None:
    """Fields a later version adds (top level, per group, per schedule) are left out, not fatal:
    a rolling upgrade never hides a hub from an older CLI or dashboard."""
    hub = ActionHub("memory://")

    @hub.schedule("beat", every=3600)
    @hub.action("beats")
    async def beats(job: Job) -> None:
        pass

    async with hub.running():
        expected = HubSnapshot.from_json(snapshot_of(hub, 1.0).to_json())
    document = orjson.loads(snapshot_of(hub, 1.0).to_json())
    document["from_the_future"] = 1
    document["schedules"][0]["from_the_future"] = 2
    document["groups"][0]["from_the_future"] = 3
    snapshot = HubSnapshot.from_json(orjson.dumps(document))
    assert [info.name for info in snapshot.schedules] == ["beat"]
    assert [stat.addr for stat in snapshot.groups] == [stat.addr for stat in expected.groups] == ["beats"]


def test_the_cli_rows_join_the_hubs_definitions_and_the_states() -> None:
    def info(name: str, digest: str, **changes: object) -> ScheduleInfo:
        fields: dict[str, object] = dict(
            name=name, topic="t", cron=None, every=60.0, tz="UTC", catch_up="latest", jitter=0.0,
            digest=digest, last=None, next=None,
        )  # fmt: skip
        return ScheduleInfo(**{**fields, **changes})  # type: ignore[arg-type]

    now = utc(2026, 12, 7, 12, 0, 30).timestamp()
    declared = {
        "shared": [("hub-b", info("shared", "d1")), ("hub-a", info("shared", "d1"))],
        "clash": [("hub-a", info("clash", "d1")), ("hub-b", info("clash", "d2"))],
        "nightly": [("hub-a", info("nightly", "d3", cron="0 3 * * *", every=None, tz="Europe/London"))],
    }
    noon = ms(utc(2026, 12, 7, 12))
    states = {
        "shared": ScheduleState("d1", noon, noon),
        "gone": ScheduleState("d9", 2_000, 1_000),
        "nightly": ScheduleState("old", 5, 5),
        "clash": ScheduleState("d2", 7, None),
    }
    rows = {row.name: row for row in schedule_rows(declared, states, now)}
    assert rows["shared"] == ScheduleRow(
        "shared", "t", "every 60s", "UTC", "latest", ("hub-a", "hub-b"), False,
        utc(2026, 12, 7, 12).timestamp(), utc(2026, 12, 7, 12, 1).timestamp(),
    )  # fmt: skip
    assert rows["clash"].conflicting and rows["clash"].last is None
    assert rows["gone"] == ScheduleRow("gone", None, None, None, None, (), False, 1.0, None)
    # the state of a former definition is not this one's last tick
    assert rows["nightly"].last is None and rows["nightly"].next == utc(2026, 12, 8, 3).timestamp()


async def test_a_hub_without_schedules_runs_no_scheduler(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub(MemoryBus())
    async with hub.running():
        await trio.sleep(1)
        assert not hub.schedules._running


# --------------------------------------------------------------------------- the Redis script


def redis_ms(client: redis.Redis) -> int:
    """Redis's clock (TIME), in ms."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _tick(at: int, overdue: bool = False) -> Tick:
    return Tick(
        at, Message("beats", {"at": at}, id=f"schedule:beat:{at}", headers={"schedule": "beat"}), overdue
    )


CALLS: list[tuple[str, str, list[tuple[int, bool]]]] = [
    ("d1", "latest", [(0, False)]),  # no state yet, offered a tick: that one, and the state starts
    ("d1", "latest", [(-3, False)]),  # before the state's start: not owed
    ("d1", "latest", [(1, False)]),
    ("d1", "latest", [(1, False)]),  # fired already
    ("d1", "all", [(2, True), (3, True), (4, True), (5, False)]),
    ("d1", "latest", [(6, True), (7, True), (8, False)]),
    ("d1", "none", [(9, True), (10, True), (11, False)]),
    ("d1", "none", [(12, False), (10_000, False)]),  # far in the future: refused
    ("d2", "all", [(13, True), (14, True)]),  # another definition: no catch-up, the newest
    # two definitions taking turns (a rolling deploy): the stored last is the floor
    ("d1", "latest", [(14, False)]),  # fired by d2 already: nothing, the state becomes d1's
    ("d2", "latest", [(14, False), (15, False)]),
    ("d1", "none", [(15, False), (16, True), (17, False)]),  # 16: owed to d2, not caught up
    ("d1", "latest", [(18, False)]),
]
EXPECTED = [
    ((0,), 0, True, 0),
    ((), 0, False, 0),
    ((100,), 100, False, 0),
    ((), 100, False, 0),
    ((200, 300, 400, 500), 500, False, 0),
    ((700, 800), 800, False, 0),
    ((1100,), 1100, False, 0),
    ((1200,), 1200, False, 1),
    ((1400,), 1400, True, 0),
    ((), 1400, True, 0),
    ((1500,), 1500, True, 0),
    ((1700,), 1700, True, 0),
    ((1800,), 1800, False, 0),
]


async def _replay(bus: Bus, base: int) -> list[tuple[tuple[int, ...], int, bool, int]]:
    out = []
    for digest, catch_up, offered in CALLS:
        fired = await bus.fire_ticks("beat", digest, catch_up, [_tick(base + d * 100, o) for d, o in offered])
        out.append((tuple(t - base for t in fired.published), fired.last - base, fired.fresh, fired.early))
    return out


async def test_the_redis_script_decides_as_memory_does(bus_url: str) -> None:
    redis_bus = open_bus(bus_url)
    assert isinstance(redis_bus, RedisStreamsBus)
    async with redis_bus.open("test", serving=False):
        probe = await redis_bus.fire_ticks("probe", "x", "latest", [], topic="beats")
        assert probe.fresh and probe.published == () and probe.last == round(probe.now * 1000)
        assert abs(probe.now - time.time()) < 5  # Redis's clock, on this machine
        base = probe.last - 5_000  # every tick offered is past, but the one far ahead
        from_redis = await _replay(redis_bus, base)
        read = await redis_bus.fire_ticks("beat", "d2", "latest", [], topic="beats")  # another definition's
        states = await redis_bus.schedule_states()
        entries = await trio.to_thread.run_sync(redis_bus.client.xrange, redis_bus.keys.stream("beats"))
    memory = MemoryBus()
    memory.wall_clock = lambda: probe.now
    assert from_redis == EXPECTED == await _replay(memory, base)
    # a read by another definition's hub starts it afresh at now and leaves the state alone
    assert (read.fresh, read.last, read.published) == (True, round(read.now * 1000), ())
    assert await memory.fire_ticks("beat", "d2", "latest", []) == TicksFired(
        (), round(probe.now * 1000), probe.now, True, 0
    )
    # each published tick is one stream entry carrying its envelope
    published = [base + t for ticks, _, _, _ in EXPECTED for t in ticks]
    assert [orjson.loads(fields[b"message"])["id"] for _, fields in entries] == [
        f"schedule:beat:{t}" for t in published
    ]
    assert states == {
        "beat": ScheduleState("d1", base + 1800, base + 1800),
        "probe": ScheduleState("x", probe.last, None),  # started, nothing published yet
    }
    assert await memory.schedule_states(["beat", "nothing"]) == {"beat": states["beat"]}


async def test_on_pubsub_the_script_publishes(bus_url: str) -> None:
    bus = open_bus(bus_url + "&mode=pubsub")
    assert isinstance(bus, RedisBusBase)
    listener = bus.client.pubsub()
    await trio.to_thread.run_sync(listener.subscribe, bus.keys.stream("beats"))
    async with bus.open("test", serving=False):
        state = await bus.fire_ticks("beat", "d", "latest", [], topic="beats")
        ahead = await bus.fire_ticks("beat", "d", "latest", [_tick(state.last + 60_000)])
        await wait_until(lambda: redis_ms(bus.client) > state.last, poll=0.001)  # its next ms is past
        due = await bus.fire_ticks("beat", "d", "latest", [_tick(state.last + 1)])

        def receive() -> bytes:
            while (message := listener.get_message(timeout=5)) is not None:
                if message["type"] == "message":
                    return bytes(message["data"])
            raise AssertionError("nothing published")

        envelope = orjson.loads(await trio.to_thread.run_sync(receive))
        listener.close()
    assert ahead.published == () and ahead.early == 1  # not due yet on the Redis clock
    assert due.published == (state.last + 1,) and envelope["id"] == f"schedule:beat:{state.last + 1}"


async def test_the_readmes_least_privilege_user_runs_schedules(
    redis_url: str, redis_server: RedisServer
) -> None:
    prefix = redis_url.split("prefix=", 1)[1]
    found = re.search(r"^ACL SETUSER actionhub (.+)$", README.read_text(), re.MULTILINE)
    assert found, "the README shows no ACL SETUSER line"
    rule = found.group(1).replace("<password>", "s3cret").replace("actionhub:", prefix)
    user = f"sched-{prefix.rstrip(':')}"
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("ACL", "SETUSER", user, *rule.split())
    try:
        bus = open_bus(f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/0?prefix={prefix}")
        async with bus.open("test", serving=False):
            state = await bus.fire_ticks("beat", "d", "latest", [])
            await wait_until(lambda: redis_ms(admin) > state.last, poll=0.001)  # its next ms is past
            fired = await bus.fire_ticks("beat", "d", "latest", [_tick(state.last + 1, overdue=True)])
            await bus.fire_ticks("other", "d", "none", [_tick(state.last + 1, overdue=True)])
            states = await bus.schedule_states()
        assert fired.published == (state.last + 1,)
        assert states == {
            "beat": ScheduleState("d", state.last + 1, state.last + 1),
            "other": ScheduleState("d", state.last + 1, state.last + 1),  # no state yet: it starts there
        }
        refusals = [entry for entry in admin.acl_log() if entry.get("username") == user]
        assert refusals == []
    finally:
        admin.execute_command("ACL", "DELUSER", user)
