"""WorkerGroup: a one-for-one supervisor of identical workers, with demand-driven scaling.

One supervisor task handles one event at a time (a panic, a due restart, a stop). The group's
buffer is its `GroupInbox`, its workers are a `WorkerPool`, and what becomes of each message is
the `MessageRunner`'s business: this module is the supervisor that ties them together.

Past its restart limit a group escalates, then does what ``on_max_restarts`` says: cool down
(stop its workers, hand back what it has not started, read nothing, start again later), leave the
hub, or stop the hub. A running hub never holds a group that is neither working nor coming back.
"""

from __future__ import annotations

import logging
import math
import random
import time
import traceback as tb_module
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from ..bus.base import Bus, Subscription
from ..errors import ConfigurationError
from ..message import Message
from ..payloads import Codec
from ..stats import WorkerStat
from .escalation import Escalation, EscalationReason
from .inbox import GroupInbox
from .policy import (
    Behaviour,
    EscalationProtocol,
    GroupConfig,
    GroupState,
    Isolation,
    OnMaxRestarts,
    RestartIntensity,
    Start,
)
from .pool import WorkerPool
from .process import ProcessPool
from .runner import Action, MessageObserver, MessageRunner, Outcome, Panic

if TYPE_CHECKING:
    from ..hub import ActionHub

log = logging.getLogger("actionhub.group")

Report = Callable[[Escalation], None]

__all__ = ["GroupOutcome", "MessageObserver", "Outcome", "WorkerGroup", "attach"]


@attrs.frozen
class _Respawn:
    pass


@attrs.frozen
class _Stop:
    pass


@attrs.frozen
class _Restart:
    """An operator asked for a restart of every worker (or for the end of a cool-down)."""


@attrs.frozen
class _Escalate:
    """Asked from outside the supervisor (a master whose slaves exhausted its restart limit)."""

    escalation: Escalation


@attrs.frozen
class _Suspend:
    """A slave's master cools down: stand down until `_Resume`; ``stood_down`` is set once done."""

    stood_down: trio.Event


@attrs.frozen
class _Resume:
    """A slave's master is back from its cool-down."""


_Event = Panic | _Respawn | _Stop | _Escalate | _Restart | _Suspend | _Resume


@attrs.frozen
class GroupOutcome:
    """How a group's run ended: stopped on request, or escalated (then the owner removes it,
    and stops the whole hub if ``stops_hub``)."""

    escalation: Escalation | None = None
    stops_hub: bool = False

    @property
    def escalated(self) -> bool:
        return self.escalation is not None


class WorkerGroup:
    """The supervised pool of workers running one action for one consumer group of a topic."""

    def __init__(
        self,
        *,
        name: str,
        topic: str,
        action: Action,
        config: GroupConfig,
        hub: ActionHub,
        report: Report,
        on_first_message: Callable[[WorkerGroup], None] | None = None,
        rng: random.Random | None = None,
        codec: Codec | None = None,
    ) -> None:
        """``codec``: the action's payload type, validated on delivery (`actionhub.payloads`)."""
        self.name = name
        self.topic = topic
        self.config = config
        self.hub = hub
        self._report = report
        self._on_first_message = on_first_message
        self._rng = rng or random.Random()
        self._intensity = RestartIntensity(config.max_restarts, config.restart_window)
        self.subscription: Subscription | None = None
        self._bus: Bus | None = None  # set by `attach`: where a group back from a cool-down reads
        self._consumer_group = name
        self.processes: ProcessPool | None = None
        if config.isolation is Isolation.PROCESS:
            self.processes = ProcessPool(name, action, config)
            action = self.processes.run
        self.inbox = GroupInbox(
            name,
            capacity=config.buffer,
            accept_wait=config.accept_wait,
            ordered=config.ordered,
            on_arrival=self._on_arrival,
        )
        self.runner = MessageRunner(
            name=name,
            action=action,
            hub=hub,
            config=config,
            inbox=self.inbox,
            rng=self._rng,
            later=self._later,
            lane_freed=self._lane_freed,
            codec=codec,
        )
        self._events_send, self._events = trio.open_memory_channel[_Event](math.inf)
        self.pool = WorkerPool(
            name,
            config=config,
            inbox=self.inbox,
            runner=self.runner,
            processes=self.processes,
            on_panic=self._events_send.send_nowait,
        )
        self._timers: trio.Nursery | None = None
        self._timer_scopes: set[trio.CancelScope] = set()  # what a cool-down cancels
        self.cooling_down = False
        self.cool_down_until: float | None = None  # wall-clock time the cool-down ends
        self._give_ups = 0  # consecutive cool-downs, each longer than the last
        self._back_at = -math.inf  # trio time the group last came back from a cool-down
        self._coming_back: trio.CancelScope | None = None  # re-subscribing; a stop cancels it
        self._stop_requested = False
        self._suspended = False  # a slave standing down with its master: only the master wakes it
        self._deferred: list[_Event] = []  # escalations that came during a cool-down, for after it
        self.started = False
        self.finished = trio.Event()

        self.escalations = 0
        self.restarts = 0

    @property
    def action(self) -> Action:
        return self.runner.action

    @property
    def held(self) -> bool:
        """Paused by an operator: nothing new starts (intake fills the buffer)."""
        return self.pool.held

    @property
    def state(self) -> GroupState:
        if self.finished.is_set():
            return GroupState.STOPPED
        if self.cooling_down:
            return GroupState.COOLING_DOWN
        return GroupState.PAUSED if self.held else GroupState.RUNNING

    # ------------------------------------------------------------------ intake

    def _on_arrival(self) -> None:
        if not self.started:
            if self._on_first_message is not None:
                callback, self._on_first_message = self._on_first_message, None
                callback(self)
            return
        self.pool.dispatch()

    def _lane_freed(self) -> None:
        pool = self.pool
        if self.inbox and not (pool.closed or pool.paused):
            pool.dispatch()  # a message of that key may be waiting

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` after ``delay``, unless a cool-down stops the workers first."""
        scope = trio.CancelScope()
        self._timer_scopes.add(scope)

        async def later() -> None:
            try:
                with scope:
                    await trio.sleep(delay)
                    fn()
            finally:
                self._timer_scopes.discard(scope)

        assert self._timers is not None
        self._timers.start_soon(later)

    # ------------------------------------------------------------------ supervision

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> GroupOutcome:
        """Supervise until stopped or escalated. Never raises an escalation to the caller."""
        outcome = GroupOutcome()
        pool = self.pool
        if pool.closed:  # stopped before it ever ran
            task_status.started()
            self.finished.set()
            return outcome
        reported_started = False
        try:
            async with trio.open_nursery() as timers:
                async with trio.open_nursery() as nursery:
                    pool.nursery = nursery
                    self._timers = timers
                    self.started = True
                    pool.ensure_min()
                    pool.dispatch_buffered()
                    await self._on_started(nursery)
                    task_status.started()
                    reported_started = True
                    outcome = await self._supervise()
                    await self._before_stop()
                    self._close_intake()
                    await pool.stop_all(self.config.shutdown_timeout)
                    self._report_late_panics()
                    await self._close_subscription()
                timers.cancel_scope.cancel()
        except Exception as error:  # a fault of the group itself must not reach the hub raw
            log.exception("group %s failed", self.name)
            fault = self._fault(error, "panic" if reported_started else "start_failure")
            pending = tuple(d.message for d in self.inbox.drain())
            outcome = GroupOutcome(attrs.evolve(fault, pending_messages=pending))
            if not reported_started:
                task_status.started()
            await self._close_subscription()  # nothing may feed, or keep leases for, a dead group
        finally:
            self._close_intake()
            self.cooling_down = False
            self.cool_down_until = None
            self.finished.set()
        if outcome.escalation is not None:
            self._alert(outcome.escalation)
        return outcome

    def _alert(self, escalation: Escalation) -> None:
        self.escalations += 1
        self._report(escalation)

    def _report_late_panics(self) -> None:
        """Panics of workers that were finishing during a stop: no restart, but still reported."""
        while True:
            try:
                event = self._events.receive_nowait()
            except trio.WouldBlock:
                return
            if isinstance(event, Panic):
                self._alert_resumed(event)

    def _alert_resumed(self, panic: Panic) -> None:
        self._alert(self._escalation(panic, "panic", EscalationProtocol.RESUME, EscalationProtocol.RESUME))

    async def _on_started(self, nursery: trio.Nursery) -> None:
        """Hook for masters: start slaves once this group runs."""

    async def _before_stop(self) -> None:
        """Hook for masters: stop slaves before this group's workers."""

    async def _before_stand_down(self) -> None:
        """Hook for masters: their slaves stand down with them (a cool-down)."""

    def _after_come_back(self) -> None:
        """Hook for masters: their slaves come back with them."""

    # ------------------------------------------------------------------ operator control

    def pause(self) -> None:
        """Start nothing new; in-flight work finishes. Intake goes on until the buffer is full,
        then the bus holds the rest (Redis) or publishers wait (in-process). Never blocks."""
        self.pool.held = True

    def resume(self) -> None:
        """Undo `pause`."""
        self.pool.held = False
        self.inbox.wake_feeders()
        if self.started:
            self.pool.dispatch_buffered()

    def scale(self, min_workers: int, max_workers: int) -> None:
        """Change the worker bounds while running (`ConfigurationError` if they cannot work).
        Workers above the new maximum leave once their current message is done."""
        config = attrs.evolve(self.config, min_workers=min_workers, max_workers=max_workers)
        self.config = self.runner.config = config
        self.pool.scale(config.effective_min, config.effective_max)

    def restart(self) -> None:
        """Restart every worker, as RESTART_ALL does after a panic (the buffer is kept). A group
        cooling down comes back now."""
        self._events_send.send_nowait(_Restart())

    def request_stop(self) -> None:
        """Ask for a graceful stop (intake closes, in-flight work finishes). Never blocks."""
        self._stop_requested = True
        self._events_send.send_nowait(_Stop())
        if self._coming_back is not None:  # re-subscribing may wait for an unreachable bus
            self._coming_back.cancel()

    async def stop(self) -> None:
        """Graceful stop; returns once the group has finished."""
        if not self.started:
            self._close_intake()
            await self._close_subscription()
            self.finished.set()
            return
        self.request_stop()
        await self.finished.wait()

    def escalate(self, escalation: Escalation) -> None:
        """Make this group end with ``escalation`` (used by a master for its slaves' failures)."""
        self._events_send.send_nowait(_Escalate(escalation))

    def suspend(self, stood_down: trio.Event) -> None:
        """Stand down (no workers, nothing read) until `wake`, for a master cooling down;
        ``stood_down`` is set once it has."""
        self._events_send.send_nowait(_Suspend(stood_down))

    def wake(self) -> None:
        """Come back from a `suspend`: the master is back."""
        self._events_send.send_nowait(_Resume())

    def _close_intake(self) -> None:
        self.pool.closed = True
        self.inbox.close()  # blocked publishers see HubStopped

    async def _close_subscription(self) -> None:
        if self.subscription is not None:
            subscription, self.subscription = self.subscription, None
            with trio.CancelScope(shield=True):
                await subscription.close()

    async def _supervise(self) -> GroupOutcome:
        async for event in self._events:
            if isinstance(event, _Stop):
                return GroupOutcome()
            if isinstance(event, _Escalate):
                outcome = await self._give_up(event.escalation)
            elif isinstance(event, _Restart):
                self.restarts += 1
                await self._restart_all()
                continue
            elif isinstance(event, _Respawn):
                self.pool.respawn()
                continue
            elif isinstance(event, _Suspend):
                outcome = await self._suspend(event.stood_down)
            elif isinstance(event, _Resume):
                continue  # not suspended (a wake that crossed a stop)
            else:
                outcome = await self._on_panic(event)
            if outcome is not None:
                return outcome
        return GroupOutcome()  # pragma: no cover - the channel is never closed while running

    async def _on_panic(self, panic: Panic) -> GroupOutcome | None:
        behaviour = self.config.behaviour
        if behaviour is Behaviour.DO_NOTHING:
            self._alert_resumed(panic)
            return None
        if behaviour is Behaviour.STOP_ALL_AND_ESCALATE:
            pending = await self._stop_for_escalation()
            kill = EscalationProtocol.KILL_AND_ESCALATE
            return GroupOutcome(self._escalation(panic, "panic", kill, kill, pending))
        if not self._intensity.allow(trio.current_time()):
            kill = EscalationProtocol.KILL_AND_ESCALATE
            return await self._give_up(self._escalation(panic, "max_restarts", kill, kill))
        self.restarts += 1
        if behaviour is Behaviour.RESTART_ONE:
            self._alert(
                self._escalation(panic, "panic", EscalationProtocol.RESTART, EscalationProtocol.RESUME)
            )
            self._schedule_respawn()
        else:
            self._alert(
                self._escalation(panic, "panic", EscalationProtocol.RESTART, EscalationProtocol.RESTART)
            )
            await self._restart_all()
        return None

    def _escalation(
        self,
        panic: Panic,
        reason: EscalationReason,
        worker_protocol: EscalationProtocol,
        group_protocol: EscalationProtocol,
        pending: tuple[Message, ...] = (),
    ) -> Escalation:
        return Escalation(
            group=self.name,
            error=panic.error,
            traceback=panic.traceback,
            reason=reason,
            worker_protocol=worker_protocol,
            group_protocol=group_protocol,
            offending_message=panic.message,
            pending_messages=pending,
            restarts=self.restarts,
        )

    def _fault(self, error: Exception, reason: EscalationReason) -> Escalation:
        """The escalation of a fault of the group itself (not of its action)."""
        kill = EscalationProtocol.KILL_AND_ESCALATE
        traceback = "".join(tb_module.format_exception(error))
        return Escalation(self.name, error, traceback, reason, kill, kill, restarts=self.restarts)

    def _schedule_respawn(self) -> None:
        backoff = self.config.restart_backoff
        self.pool.pending_respawns += 1
        if backoff is None:
            self._events_send.send_nowait(_Respawn())
            return
        delay = backoff.delay(self._intensity.recent, self._rng)
        self._later(delay, lambda: self._events_send.send_nowait(_Respawn()))

    async def _restart_all(self) -> None:
        """Stop every worker gracefully (buffer kept, intake paused), then start fresh ones."""
        pool = self.pool
        pool.paused = True
        try:
            await pool.stop_all(self.config.shutdown_timeout)
        finally:
            pool.paused = False
        backoff = self.config.restart_backoff
        if backoff is not None:
            await trio.sleep(backoff.delay(self._intensity.recent, self._rng))
        if pool.closed:
            return
        pool.ensure_min()
        pool.dispatch_buffered()

    async def _stop_for_escalation(self) -> tuple[Message, ...]:
        """Close intake, take the unstarted messages (in order), stop the workers, then close the
        subscription (so that what the workers finish is acked, and an ordered group keeps its
        partitions until nothing of them runs here). On a durable bus what was not started goes
        back to the bus at once: another hub can take it now."""
        await self._before_stop()
        self._close_intake()
        pending = tuple(d.message for d in self.inbox.drain())
        await self.pool.stop_all(self.config.shutdown_timeout)
        await self._close_subscription()
        return pending

    # ------------------------------------------------------------------ past the restart limit

    async def _give_up(self, escalation: Escalation) -> GroupOutcome | None:
        """The restart limit is exhausted: escalate, then do what ``on_max_restarts`` says."""
        then = self.config.on_max_restarts
        if then is OnMaxRestarts.COOL_DOWN:
            return await self._cool_down(escalation)
        pending = await self._stop_for_escalation()
        return GroupOutcome(
            attrs.evolve(escalation, pending_messages=pending), stops_hub=then is OnMaxRestarts.STOP_HUB
        )

    async def _cool_down(self, escalation: Escalation) -> GroupOutcome | None:
        """Stop the workers, hand back what was not started, read nothing; come back after the
        cool-down, which grows with each give-up in a row (a run of ``restart_window`` without
        one resets it). An operator's restart ends it early; a stop ends the group. If the group
        cannot read again (the bus refuses), that is reported and it cools down once more."""
        if trio.current_time() - self._back_at >= self.config.restart_window:
            self._give_ups = 0
        self.cooling_down = True
        handed_back: tuple[Message, ...] | None = None
        while True:
            self._give_ups += 1
            delay = self.config.cool_down.delay(self._give_ups, self._rng)
            self.cool_down_until = time.time() + delay  # shown while standing down, refined below
            if handed_back is None:
                handed_back = await self._stand_down()
                self.cool_down_until = time.time() + delay
            log.error(
                "group %s: %s; cooling down for %.1fs, %d unstarted message(s) handed back",
                self.name,
                "went past its restart limit"
                if escalation.reason == "max_restarts"
                else "could not start again",
                delay,
                len(handed_back),
                extra={"group": self.name, "reason": escalation.reason, "cool_down": delay},
            )
            self._alert(
                attrs.evolve(
                    escalation,
                    group_protocol=EscalationProtocol.RESTART,
                    pending_messages=handed_back,
                    cool_down_until=self.cool_down_until,
                    restarts=self.restarts,
                )
            )
            if not await self._wait_out(delay):
                return GroupOutcome()
            try:
                return None if await self._come_back() else GroupOutcome()
            except Exception as error:  # say, Redis refused the subscription (OOM, ACL)
                log.exception("group %s could not subscribe again after its cool-down", self.name)
                escalation = self._fault(error, "start_failure")
                handed_back = ()

    async def _suspend(self, stood_down: trio.Event) -> GroupOutcome | None:
        """A slave whose master cools down: stand down with it, come back when it does."""
        self.cooling_down = self._suspended = True
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
        pool = self.pool
        pool.paused = True  # workers take nothing more, from now on
        durable = self._bus is not None and self._bus.durable
        if durable:
            self.inbox.close()  # the reader stops at once
        await self._before_stand_down()
        await pool.stop_all(self.config.shutdown_timeout)
        for scope in list(self._timer_scopes):
            scope.cancel()  # respawns and retries held in place: the group starts afresh
        pool.pending_respawns = 0
        self.runner.release_held()
        if not durable:
            return ()
        handed_back = tuple(d.message for d in self.inbox.drain())
        await self._close_subscription()  # what was read and not settled becomes claimable
        return handed_back

    async def _wait_out(self, delay: float) -> bool:
        """Wait ``delay`` seconds (`math.inf`: until woken), handling what comes meanwhile. False
        on a stop; True once the time is up or the group is told to come back (an operator's
        restart; a suspended slave's master). Late panics of the workers that stood down are
        reported, never counted; escalations wait for the group to be back."""
        wakes = (_Resume,) if self._suspended else (_Restart, _Resume)
        woken = False
        while True:  # first what came while standing down (a panic then is not the next life's)
            try:
                event = self._events.receive_nowait()
            except trio.WouldBlock:
                break
            woken = self._while_away(event, wakes) or woken
        if not woken:
            with trio.move_on_after(delay):
                while not (self._stop_requested or woken):
                    woken = self._while_away(await self._events.receive(), wakes)
        return not self._stop_requested

    def _while_away(self, event: _Event, wakes: tuple[type[_Event], ...]) -> bool:
        """Handle ``event`` while standing down; True if it says to come back."""
        if isinstance(event, Panic):
            self._alert_resumed(event)
        elif isinstance(event, _Escalate):
            self._deferred.append(event)
        # respawns belonged to the life that ended; a stop is in `_stop_requested`
        return isinstance(event, wakes)

    async def _come_back(self) -> bool:
        """Read again, start fresh workers (and a master's slaves). False: a stop came first."""
        self._intensity = RestartIntensity(self.config.max_restarts, self.config.restart_window)
        if self.subscription is None and self._bus is not None:
            self.inbox.reopen()
            self._coming_back = trio.CancelScope()
            try:
                with self._coming_back:
                    if not self._stop_requested:
                        await attach(self, self._bus, self._consumer_group)
            except BaseException:
                self.inbox.close()
                raise
            finally:
                self._coming_back = None
            if self.subscription is None:  # a stop came meanwhile
                self.inbox.close()
                return False
        self.cooling_down = False
        self.cool_down_until = None
        pool = self.pool
        pool.paused = False
        self._back_at = trio.current_time()
        log.warning("group %s is back from its cool-down", self.name, extra={"group": self.name})
        self._after_come_back()
        pool.ensure_min()
        pool.dispatch_buffered()
        for event in self._deferred:
            self._events_send.send_nowait(event)
        self._deferred.clear()
        return True

    # ------------------------------------------------------------------ stats

    def stats(self) -> WorkerStat:
        """A consistent snapshot: taken between two checkpoints, so nothing changes under it."""
        config = self.config
        subscription = self.subscription
        runner, inbox, pool = self.runner, self.inbox, self.pool
        return WorkerStat(
            addr=self.name,
            topic=self.topic,
            instance=config.instance,
            behaviour=config.behaviour,
            max_workers=pool.max,
            min_workers=pool.min,
            total_message_received=inbox.received,
            total_message_processed=runner.processed,
            total_escalations=self.escalations,
            total_panics=runner.panics,
            total_restarts=self.restarts,
            available_worker_capacity=0 if self.cooling_down else pool.max - runner.in_flight,
            total_current_workers=len(pool),
            total_created_workers=pool.created,
            total_killed_workers=pool.killed,
            total_idled_workers=pool.idled,
            buffered=len(inbox),
            in_flight=runner.in_flight,
            total_failed=runner.failed,
            total_retried=runner.retried,
            total_dead_lettered=runner.dead_lettered + inbox.malformed,
            total_rejected=runner.rejected,
            total_timeouts=runner.timeouts,
            total_overloaded=inbox.overloaded,
            total_dropped=inbox.dropped,
            total_malformed=inbox.malformed,
            state=self.state,
            cool_down_until=self.cool_down_until,
            partitions_owned=subscription.partitions_owned if subscription is not None else 0,
            total_rebalances=subscription.rebalances if subscription is not None else 0,
            **(self.processes.stats() if self.processes is not None else {}),
        )

    def __repr__(self) -> str:
        return f"<WorkerGroup {self.name} topic={self.topic} workers={len(self.pool)}>"


def check_start(config: GroupConfig, bus: Bus) -> bool:
    """Whether a group configured so starts at the earliest message ``bus`` keeps; a
    `ConfigurationError` if it asks for that on a bus that keeps none."""
    earliest = config.start is Start.EARLIEST
    if earliest and not bus.keeps_history:
        raise ConfigurationError(f"start='earliest' needs a bus that keeps history; {bus.url} keeps none")
    return earliest


async def attach(group: WorkerGroup, bus: Bus, consumer_group: str) -> None:
    """Subscribe ``group`` (its inbox) to its topic as ``consumer_group``."""
    earliest = check_start(group.config, bus)
    config = group.config
    group._bus, group._consumer_group = bus, consumer_group
    group.subscription = await bus.subscribe(
        group.topic,
        consumer_group,
        group.inbox,
        earliest=earliest,
        ordered=config.ordered,
        partitions=config.partitions,
    )
