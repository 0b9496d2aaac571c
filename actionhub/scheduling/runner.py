"""The one task of a hub that fires every schedule it declares.

Each hub computes the same ticks and offers each to the bus when it comes due (its time plus the
schedule's deterministic jitter); the bus publishes each tick once, whichever hub offers it first
(`Bus.fire_ticks`). The hub's clock for this is trio's clock plus an offset learnt from the
bus's answers (Redis's TIME), so hubs whose wall clocks disagree still fire on Redis's time.

A schedule's first step reads its state: the ticks after its ``last`` up to now were missed by
every hub (none was running, or none could reach the bus) and are offered as overdue, so that
``catch_up`` decides; so are ticks this hub finds long past due later (after an outage).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import attrs
import trio

from ..bus.ticks import Tick, TicksFired
from ..errors import ConfigurationError, HubStopped
from ..message import Message
from .schedule import Schedule, ScheduleOptions, tick_time

if TYPE_CHECKING:
    from ..bus.base import Bus
    from ..registry.templates import WorkerTemplate

log = logging.getLogger("actionhub.schedules")

F = TypeVar("F", bound=Callable[..., object])

#: The most missed ticks ``catch_up="all"`` publishes (the most recent); older ones are logged.
MAX_CATCH_UP = 100

#: Milliseconds past its time (and jitter) after which an unfired tick counts as missed: half the
#: time to the next tick, within these bounds. Far more than a live hub takes to offer it, so a
#: tick that slow hubs or a short Redis failover delayed is not skipped as missed by
#: ``catch_up="none"``; far less than a restart after a real outage takes.
MISSED_AFTER = (1_000, 30_000)

#: Seconds between two tries while the bus fails (a tick is not lost meanwhile: it is overdue next).
RETRY_AFTER = 1.0


class _Hub(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def bus(self) -> Bus: ...

    def templates(self) -> list[WorkerTemplate]: ...


@attrs.frozen
class ScheduleInfo:
    """A schedule as a hub announces it (in its `HubSnapshot`)."""

    name: str
    topic: str
    cron: str | None
    #: seconds
    every: float | None
    tz: str
    catch_up: str
    jitter: float
    digest: str
    #: the newest tick this hub knows was fired or passed over (or when its state started afresh),
    #: seconds since the epoch
    last: float | None
    #: the next tick, seconds since the epoch
    next: float | None

    def schedule(self) -> Schedule:
        """The `Schedule` of this definition (to compute its ticks)."""
        return Schedule(self.name, self.topic, cron=self.cron, every=self.every, tz=self.tz)


@attrs.define
class _State:
    schedule: Schedule
    last: int | None = None  # ms; None: the state was not read yet
    failures: int = 0


class Scheduler:
    """The schedules of one hub and the task that fires them (only while it has any)."""

    def __init__(self, hub: _Hub) -> None:
        self._hub = hub
        self._states: dict[str, _State] = {}
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._changed = trio.Event()
        self._offset: float | None = None  # the bus's clock minus trio's, in seconds

    # ------------------------------------------------------------------ declaring

    def add(self, schedule: Schedule) -> Schedule:
        """Declare ``schedule`` on this hub (before or while it runs)."""
        if schedule.name in self._states:
            raise ConfigurationError(f"a schedule named {schedule.name!r} is already declared on this hub")
        self._check(schedule)
        self._states[schedule.name] = _State(schedule)
        self._changed.set()
        if self._nursery is not None and not self._running:
            self._running = True  # one task, however many are declared before it starts
            self._nursery.start_soon(self.run)
        return schedule

    def declare(self, name: str, topic: str | None, options: ScheduleOptions) -> Schedule | Callable[[F], F]:
        """`ActionHub.schedule`: declare at once with ``topic``; without, a decorator that takes
        the topic of the action it is put on (above its ``@hub.action``)."""

        def make(topic: str) -> Schedule:
            return Schedule(name, topic, **options)

        if topic is not None:
            return self.add(make(topic))
        make("topic")  # misuse fails here, not when the decorator is applied

        def decorate(fn: F) -> F:
            bound = [template for template in self._hub.templates() if template.fn is fn]
            if not bound:
                raise ConfigurationError(
                    f"schedule {name!r}: {getattr(fn, '__name__', fn)!r} is not a bound action; "
                    "put @hub.schedule(...) above @hub.action(...), or give topic="
                )
            self.add(make(bound[0].topic))
            return fn

        return decorate

    def check(self) -> None:
        """`ConfigurationError` if a schedule's message cannot be published on the hub's bus (it
        may have changed since the schedule was declared)."""
        for state in self._states.values():
            self._check(state.schedule)

    def _check(self, schedule: Schedule) -> None:
        """Fail now, not at every tick, if the schedule's message cannot be published on the bus."""
        message = self._tick(schedule, schedule.next_tick(self._now()), overdue=True).message
        try:
            self._hub.bus.check_message(message)
        except ConfigurationError as error:
            raise ConfigurationError(
                f"schedule {schedule.name!r} cannot publish its payload: {error}"
            ) from None

    def infos(self) -> list[ScheduleInfo]:
        """What this hub knows of each of its schedules."""
        out = []
        for state in self._states.values():
            schedule = state.schedule
            nxt = _upcoming(schedule, state.last if state.last is not None else self._now())
            out.append(
                ScheduleInfo(
                    name=schedule.name,
                    topic=schedule.topic,
                    cron=schedule.cron,
                    every=None if schedule.every_ms is None else schedule.every_ms / 1000,
                    tz=schedule.tz,
                    catch_up=schedule.catch_up,
                    jitter=schedule.jitter,
                    digest=schedule.digest,
                    last=None if state.last is None else state.last / 1000,
                    next=nxt / 1000,
                )
            )
        return out

    # ------------------------------------------------------------------ running

    def serve(self, nursery: trio.Nursery) -> None:
        """Fire the schedules in ``nursery`` (the hub's, while it runs): at once if there are
        any, else from the first one declared."""
        self._nursery = nursery
        if self._states:
            self._running = True
            nursery.start_soon(self.run)

    async def run(self) -> None:
        try:
            while True:
                self._changed = trio.Event()
                wake = math.inf
                for state in list(self._states.values()):
                    wake = min(wake, await self._step(state))
                with trio.move_on_at(wake):
                    await self._changed.wait()
        finally:
            self._running = False

    def _now(self) -> int:
        """This hub's estimate of the bus's clock, in ms (the wall clock until the bus answered)."""
        if self._offset is None:
            return int(time.time() * 1000)
        return int((trio.current_time() + self._offset) * 1000)

    def _trio_time(self, ms: int) -> float:
        """The trio time at which the bus's clock reads ``ms`` (known once the bus answered)."""
        assert self._offset is not None
        return ms / 1000 - self._offset

    def _learn(self, fired: TicksFired) -> None:
        self._offset = fired.now - trio.current_time()

    async def _step(self, state: _State) -> float:
        """Offer what is due of ``state``'s schedule; the trio time at which to look again."""
        schedule = state.schedule
        offered: list[Tick] = []
        try:
            if state.last is None:
                fired = await self._fire(schedule, [])
                state.last = fired.last
                if fired.fresh:
                    log.info(
                        "schedule %s starts afresh at %s (new, or its definition changed)",
                        schedule.name,
                        tick_time(fired.last),
                        extra={"schedule": schedule.name},
                    )
            now = self._now()
            upcoming = _upcoming(schedule, state.last)
            if upcoming + schedule.delay(upcoming) > now:
                return self._trio_time(upcoming + schedule.delay(upcoming))
            ticks, left_out = schedule.ticks_between(state.last, now, cap=MAX_CATCH_UP)
            offered = [
                self._tick(schedule, at, overdue=at + schedule.delay(at) + _grace(schedule, at) < now)
                for at in ticks
                if at + schedule.delay(at) <= now
            ]
            fired = await self._fire(schedule, offered)
            state.last = max(state.last, fired.last)
            self._report(schedule, offered, fired, left_out)
            state.failures = 0
        except HubStopped:
            return math.inf
        except ConfigurationError as error:  # a bus that cannot run schedules: say it once
            log.error("schedule %s cannot fire: %s", schedule.name, error, extra={"schedule": schedule.name})
            return math.inf
        except Exception as error:  # never take the hub down: the ticks are overdue next time
            state.failures += 1
            log.warning(
                "schedule %s could not fire: %r; trying again", schedule.name, error,
                extra={"schedule": schedule.name},
            )  # fmt: skip
            return trio.current_time() + RETRY_AFTER * min(state.failures, 10)
        upcoming = _upcoming(schedule, state.last)
        wake = self._trio_time(upcoming + schedule.delay(upcoming))
        if not offered and wake <= trio.current_time():  # due, yet nothing to offer: never spin
            return trio.current_time() + RETRY_AFTER
        return wake

    async def _fire(self, schedule: Schedule, ticks: list[Tick]) -> TicksFired:
        fired = await self._hub.bus.fire_ticks(
            schedule.name, schedule.digest, schedule.catch_up, ticks, topic=schedule.topic
        )
        self._learn(fired)
        return fired

    def _tick(self, schedule: Schedule, at: int, *, overdue: bool) -> Tick:
        headers = {"schedule": schedule.name, "scheduled_at": tick_time(at)}
        if overdue:
            headers["schedule_catch_up"] = "1"
        message = Message(
            topic=schedule.topic,
            payload=schedule.payload,
            id=f"schedule:{schedule.name}:{at}",
            headers=headers,
            created_at=self._now() / 1000,
        )
        return Tick(at, message, overdue)

    def _report(self, schedule: Schedule, offered: list[Tick], fired: TicksFired, left_out: int) -> None:
        if fired.fresh and offered:
            log.warning(
                "schedule %s: another hub declares it with another definition; until they agree, "
                "each tick is published once, with the definition of the hub that offers it first",
                schedule.name,
                extra={"schedule": schedule.name},
            )
        overdue = [tick.at for tick in offered if tick.overdue]
        caught_up = [at for at in fired.published if at in overdue]
        if caught_up:
            log.warning(
                "schedule %s: published %d missed tick(s) from %s to %s (catch_up=%r)",
                schedule.name,
                len(caught_up),
                tick_time(caught_up[0]),
                tick_time(caught_up[-1]),
                schedule.catch_up,
                extra={"schedule": schedule.name},
            )
        elif overdue and not fired.fresh:
            log.info(
                "schedule %s: overdue tick(s) from %s to %s not published (fired by another hub, "
                "or missed: catch_up=%r)",
                schedule.name,
                tick_time(overdue[0]),
                tick_time(overdue[-1]),
                schedule.catch_up,
                extra={"schedule": schedule.name},
            )
        if left_out and caught_up and schedule.catch_up == "all":
            log.warning(
                "schedule %s: %s older missed tick(s) before %s dropped (catch_up='all' publishes "
                "at most the %d most recent)",
                schedule.name,
                "over 10000" if left_out < 0 else left_out,
                tick_time(offered[0].at),
                MAX_CATCH_UP,
                extra={"schedule": schedule.name},
            )


def _upcoming(schedule: Schedule, last: int) -> int:
    """The tick to wait for after ``last``: never one at or before it (a guard: waiting for a
    tick in the past wakes at once, again and again), stepping past such a tick."""
    upcoming = schedule.next_tick(last)
    return upcoming if upcoming > last else max(schedule.next_tick(upcoming), last + 1)


def _grace(schedule: Schedule, tick: int) -> int:
    """How late (ms, past its jitter) tick ``tick`` may be offered before it counts as missed."""
    low, high = MISSED_AFTER
    return max(low, min(high, (schedule.next_tick(tick) - tick) // 2))
