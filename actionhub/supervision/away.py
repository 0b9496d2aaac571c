"""A group's time away from work: past its restart limit it cools down (stops its workers, hands
back what it has not started, reads nothing, comes back after a cool-down that grows with each
give-up in a row), and a slave stands down while its master does. The supervisor task of the
group runs all of this, so events still come one at a time."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import attrs
import trio

from ..message import Message
from .escalation import Escalation
from .events import Escalate, Event, GroupOutcome, Restart, Resume
from .policy import EscalationProtocol, RestartIntensity
from .runner import Panic

if TYPE_CHECKING:
    from .group import WorkerGroup

log = logging.getLogger("actionhub.group")


class Away:
    """The cool-down state of one `WorkerGroup`, and the steps of standing down and coming back
    (a part of the group split off for size: it works on the group's own state)."""

    def __init__(self, group: WorkerGroup) -> None:
        self.group = group
        self.active = False  # standing down: no workers, nothing read
        self.until: float | None = None  # wall-clock time a cool-down ends
        self._give_ups = 0  # consecutive cool-downs, each longer than the last
        self._back_at = -math.inf  # trio time the group last came back from a cool-down
        self.coming_back: trio.CancelScope | None = None  # re-subscribing; a stop cancels it
        self._suspended = False  # a slave standing down with its master: only the master wakes it
        self._deferred: list[Event] = []  # escalations that came during a cool-down, for after it

    def clear(self) -> None:
        self.active = False
        self.until = None

    async def cool_down(self, escalation: Escalation) -> GroupOutcome | None:
        """Stop the workers, hand back what was not started, read nothing; come back after the
        cool-down, which grows with each give-up in a row (a run of ``restart_window`` without
        one resets it). An operator's restart ends it early; a stop ends the group. If the group
        cannot read again (the bus refuses), that is reported and it cools down once more."""
        group = self.group
        if trio.current_time() - self._back_at >= group.config.restart_window:
            self._give_ups = 0
        self.active = True
        handed_back: tuple[Message, ...] | None = None
        while True:
            self._give_ups += 1
            delay = group.config.cool_down.delay(self._give_ups, group._rng)
            self.until = time.time() + delay  # shown while standing down, refined below
            if handed_back is None:
                handed_back = await self._stand_down()
                self.until = time.time() + delay
            log.error(
                "group %s: %s; cooling down for %.1fs, %d unstarted message(s) handed back",
                group.name,
                "went past its restart limit"
                if escalation.reason == "max_restarts"
                else "could not start again",
                delay,
                len(handed_back),
                extra={"group": group.name, "reason": escalation.reason, "cool_down": delay},
            )
            group._alert(
                attrs.evolve(
                    escalation,
                    group_protocol=EscalationProtocol.RESTART,
                    pending_messages=handed_back,
                    cool_down_until=self.until,
                    restarts=group.restarts,
                )
            )
            if not await self._wait_out(delay):
                return GroupOutcome()
            try:
                return None if await self._come_back() else GroupOutcome()
            except Exception as error:  # say, Redis refused the subscription (OOM, ACL)
                log.exception("group %s could not subscribe again after its cool-down", group.name)
                escalation = group._fault(error, "start_failure")
                handed_back = ()

    async def suspend(self, stood_down: trio.Event) -> GroupOutcome | None:
        """A slave whose master cools down: stand down with it, come back when it does."""
        self.active = self._suspended = True
        try:
            try:
                await self._stand_down()
            finally:
                stood_down.set()
            if not await self._wait_out(math.inf):
                return GroupOutcome()
            return None if await self._come_back() else GroupOutcome()
        finally:
            self._suspended = False

    async def _stand_down(self) -> tuple[Message, ...]:
        """Stop everything but the group itself: reading, slaves, workers, timers. On a durable
        bus the unstarted messages go back to it (claimable at once: another hub can take them
        now) and are returned; in-process they stay in the buffer, which the workers of the
        next life start with."""
        group = self.group
        pool = group.pool
        pool.paused = True  # workers take nothing more, from now on
        durable = group._bus is not None and group._bus.durable
        if durable:
            group.inbox.close()  # the reader stops at once
        await group._before_stand_down()
        await pool.stop_all(group.config.shutdown_timeout)
        group._cancel_timers()  # respawns and retries held in place: the group starts afresh
        pool.pending_respawns = 0
        group.runner.release_held()
        if not durable:
            return ()
        handed_back = tuple(d.message for d in group.inbox.drain())
        await group._close_subscription()  # what was read and not settled becomes claimable
        return handed_back

    async def _wait_out(self, delay: float) -> bool:
        """Wait ``delay`` seconds (`math.inf`: until woken), handling what comes meanwhile. False
        on a stop; True once the time is up or the group is told to come back (an operator's
        restart; a suspended slave's master). Late panics of the workers that stood down are
        reported, never counted; escalations wait for the group to be back."""
        group = self.group
        wakes: tuple[type[Event], ...] = (Resume,) if self._suspended else (Restart, Resume)
        woken = False
        while True:  # first what came while standing down (a panic then is not the next life's)
            try:
                event = group._events.receive_nowait()
            except trio.WouldBlock:
                break
            woken = self._while_away(event, wakes) or woken
        if not woken:
            with trio.move_on_after(delay):
                while not (group._stop_requested or woken):
                    woken = self._while_away(await group._events.receive(), wakes)
        return not group._stop_requested

    def _while_away(self, event: Event, wakes: tuple[type[Event], ...]) -> bool:
        """Handle ``event`` while standing down; True if it says to come back."""
        if isinstance(event, Panic):
            self.group._alert_resumed(event)
        elif isinstance(event, Escalate):
            self._deferred.append(event)
        # respawns belonged to the life that ended; a stop is in `stop_requested`
        return isinstance(event, wakes)

    async def _come_back(self) -> bool:
        """Read again, start fresh workers (and a master's slaves). False: a stop came first."""
        group = self.group
        group._intensity = RestartIntensity(group.config.max_restarts, group.config.restart_window)
        if group.subscription is None and group._bus is not None:
            group.inbox.reopen()
            self.coming_back = trio.CancelScope()
            try:
                with self.coming_back:
                    if not group._stop_requested:
                        await group._reattach()
            except BaseException:
                group.inbox.close()
                raise
            finally:
                self.coming_back = None
            if group.subscription is None:  # a stop came meanwhile
                group.inbox.close()
                return False
        self.clear()
        pool = group.pool
        pool.paused = False
        self._back_at = trio.current_time()
        log.warning("group %s is back from its cool-down", group.name, extra={"group": group.name})
        group._after_come_back()
        pool.ensure_min()
        pool.dispatch_buffered()
        for event in self._deferred:
            group._events_send.send_nowait(event)
        self._deferred.clear()
        return True
