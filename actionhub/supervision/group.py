"""WorkerGroup: a one-for-one supervisor of identical workers, with demand-driven scaling.

One supervisor task handles one event at a time (a panic, a due restart, a stop). The group's
buffer is its `GroupInbox`, its workers are a `WorkerPool`, and what becomes of each message is
the `MessageRunner`'s business: this module is the supervisor that ties them together.

Past its restart limit a group escalates, then does what ``on_max_restarts`` says: cool down
(stop its workers, hand back what it has not started, read nothing, start again later), leave the
hub, or stop the hub (the cool-down is `away.py`'s). A running hub never holds a group that is
neither working nor coming back.
"""

from __future__ import annotations

import logging
import math
import random
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
from .away import Away
from .escalation import Escalation, EscalationReason
from .events import Escalate, Event, GroupOutcome, Respawn, Restart, Resume, Stop, Suspend
from .inbox import GroupInbox
from .limits import gate_for
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
        self._events_send, self._events = trio.open_memory_channel[Event](math.inf)
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
        self._away = Away(self)
        self._stop_requested = False
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
    def cooling_down(self) -> bool:
        """Standing down: past its restart limit (or with its master), no workers, reads nothing."""
        return self._away.active

    @property
    def cool_down_until(self) -> float | None:
        """When the cool-down ends (epoch seconds), while cooling down past the restart limit."""
        return self._away.until

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
            self._away.clear()
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
        then the bus holds the rest (Redis) or publishers wait (in-process). Runs waiting for
        the group's limits give their deliveries back unstarted. Never blocks."""
        self.pool.held = True
        self.runner.stop_waiting()

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
        self._events_send.send_nowait(Restart())

    def request_stop(self) -> None:
        """Ask for a graceful stop (intake closes, in-flight work finishes). Never blocks."""
        self._stop_requested = True
        self._events_send.send_nowait(Stop())
        if self._away.coming_back is not None:  # re-subscribing may wait for an unreachable bus
            self._away.coming_back.cancel()

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
        self._events_send.send_nowait(Escalate(escalation))

    def suspend(self, stood_down: trio.Event) -> None:
        """Stand down (no workers, nothing read) until `wake`, for a master cooling down;
        ``stood_down`` is set once it has."""
        self._events_send.send_nowait(Suspend(stood_down))

    def wake(self) -> None:
        """Come back from a `suspend`: the master is back."""
        self._events_send.send_nowait(Resume())

    def _close_intake(self) -> None:
        self.pool.closed = True
        self.inbox.close()  # blocked publishers see HubStopped

    async def _close_subscription(self) -> None:
        if self.subscription is not None:
            subscription, self.subscription = self.subscription, None
            with trio.CancelScope(shield=True):
                await subscription.close()
            if self.runner.gate is not None:
                self.runner.gate.detach()

    async def _supervise(self) -> GroupOutcome:
        async for event in self._events:
            if isinstance(event, Stop):
                return GroupOutcome()
            if isinstance(event, Escalate):
                outcome = await self._give_up(event.escalation)
            elif isinstance(event, Restart):
                self.restarts += 1
                await self._restart_all()
                continue
            elif isinstance(event, Respawn):
                self.pool.respawn()
                continue
            elif isinstance(event, Suspend):
                outcome = await self._away.suspend(event.stood_down)
            elif isinstance(event, Resume):
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
            self._events_send.send_nowait(Respawn())
            return
        delay = backoff.delay(self._intensity.recent, self._rng)
        self._later(delay, lambda: self._events_send.send_nowait(Respawn()))

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
        # runs that waited for a limit gave theirs back meanwhile: taken before the rest
        pending = tuple(d.message for d in self.inbox.drain()) + pending
        await self._close_subscription()
        return pending

    # ------------------------------------------------------------------ past the restart limit

    async def _give_up(self, escalation: Escalation) -> GroupOutcome | None:
        """The restart limit is exhausted: escalate, then do what ``on_max_restarts`` says."""
        then = self.config.on_max_restarts
        if then is OnMaxRestarts.COOL_DOWN:
            return await self._away.cool_down(escalation)
        pending = await self._stop_for_escalation()
        return GroupOutcome(
            attrs.evolve(escalation, pending_messages=pending), stops_hub=then is OnMaxRestarts.STOP_HUB
        )

    def _cancel_timers(self) -> None:
        for scope in list(self._timer_scopes):
            scope.cancel()

    async def _reattach(self) -> None:
        """Subscribe again, where the group read before (coming back from a cool-down)."""
        assert self._bus is not None
        await attach(self, self._bus, self._consumer_group)

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
            total_throttled=runner.gate.throttled if runner.gate is not None else 0,
            rate_limit=config.rate_limit,
            concurrency_limit=config.concurrency_limit,
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
    if group.runner.keeper is not None:  # publishes write pending records before the first delivery
        await group.runner.keeper.start(group.topic, consumer_group)
    group.runner.gate = gate_for(bus, group.topic, consumer_group, config, group.runner.gate)
    group.subscription = await bus.subscribe(
        group.topic,
        consumer_group,
        group.inbox,
        earliest=earliest,
        ordered=config.ordered,
        partitions=config.partitions,
    )
