"""WorkerGroup: a one-for-one supervisor of identical workers, with demand-driven scaling.

One supervisor task handles one event at a time (a panic, a due restart, a stop). Everything
that must be atomic (spawning within ``max_workers``, idling out above ``min_workers``) happens
between two checkpoints, which trio guarantees nobody can interleave.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import random
import time
import traceback as tb_module
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING, Literal, Protocol

import attrs
import orjson
import trio

from ..bus.base import Bus, Delivery, Subscription
from ..errors import ConfigurationError, HubStopped, Overloaded, Reject, Retry, WorkerProcessDied
from ..job import Job
from ..message import Message
from ..stats import WorkerStat
from .escalation import Escalation, EscalationReason
from .policy import (
    Behaviour,
    EscalationProtocol,
    GroupConfig,
    Instance,
    Isolation,
    RestartIntensity,
    Start,
)
from .process import ProcessPool

if TYPE_CHECKING:
    from ..hub import ActionHub

log = logging.getLogger("actionhub.group")

Action = Callable[[Job], Awaitable[object]]
Report = Callable[[Escalation], None]

#: How a run of the action ended, as a `MessageObserver` sees it: it returned (``ok``), raised
#: `Retry` (``retry``), `Reject` (``rejected``, dead-lettered), any other exception (``panic``:
#: retried, or dead-lettered after ``max_attempts``), ran over ``timeout`` (``timeout``, a panic
#: too), or was cancelled mid-run (``cancelled``: shutdown_timeout passed, a restart-all, a kill).
Outcome = Literal["ok", "retry", "rejected", "panic", "timeout", "cancelled"]


class MessageObserver(Protocol):
    """Told about every run of an action, in every group of a hub (its slaves and the groups it
    creates later too): set ``hub.observer`` (`actionhub.metrics.HubMetrics` does). Called
    synchronously in the worker's task, so it must be quick; what it raises is logged, no more."""

    def observe(self, group: str, queue_wait: float, duration: float, outcome: Outcome) -> None:
        """``queue_wait``: wall-clock seconds from publish (``Message.created_at``, kept across
        retries and delays) to the start of this run, never negative; ``duration``: the action's
        own run in trio seconds, settling the message excluded; ``outcome``: how the run ended."""


class _Exit(enum.Enum):
    STOPPED = "stopped"  # told to stop (shutdown, restart-all): normal
    IDLE = "idle"  # idle above min_workers for max_idleness: normal
    ONE_TIME = "one_time"  # handled its one message: normal
    PANIC = "panic"  # the action raised: a restart case
    KILLED = "killed"  # cancelled by the supervisor after a deadline
    CANCELLED = "cancelled"  # cancelled from outside (the hub's nursery): nothing is replaced


class _Worker:
    __slots__ = ("exit", "id", "panic", "scope", "stopping")

    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.scope = trio.CancelScope()
        self.stopping = False
        self.exit = _Exit.STOPPED
        self.panic: _Panic | None = None


@attrs.frozen
class _Panic:
    error: BaseException
    traceback: str
    message: Message | None  # None: the worker failed before taking a message (its process)


@attrs.frozen
class _Respawn:
    pass


@attrs.frozen
class _Stop:
    pass


@attrs.frozen
class _Restart:
    """An operator asked for a restart of every worker."""


@attrs.frozen
class _Escalate:
    """Asked from outside the supervisor (a master whose slaves exhausted its restart limit)."""

    escalation: Escalation


_Event = _Panic | _Respawn | _Stop | _Escalate | _Restart


@attrs.frozen
class GroupOutcome:
    """How a group's run ended: stopped on request, or escalated (then the owner removes it)."""

    escalation: Escalation | None = None

    @property
    def escalated(self) -> bool:
        return self.escalation is not None


class WorkerGroup:
    """The supervised pool of workers running one action for one consumer group of a topic."""

    _ids = itertools.count(1)

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
    ) -> None:
        self.name = name
        self.topic = topic
        self.action = action
        self.config = config
        self.hub = hub
        self._report = report
        self._on_first_message = on_first_message
        self._rng = rng or random.Random()
        self._min = config.effective_min
        self._max = config.effective_max
        self._one_time = config.instance is Instance.ONE_TIME
        self._intensity = RestartIntensity(config.max_restarts, config.restart_window)
        self.subscription: Subscription | None = None
        self.processes: ProcessPool | None = None
        if config.isolation is Isolation.PROCESS:
            self.processes = ProcessPool(name, action, config)
            self.action = self.processes.run

        self._buffer: deque[Delivery] = deque()
        self._ordered = config.ordered
        self._lanes: set[str] = set()  # ordered: keys with a message running or held for a retry
        self._holding: set[Delivery] = set()  # ordered: deliveries waiting for their retry, in place
        self._work_ready = trio.lowlevel.ParkingLot()  # idle workers wait here
        self._room = trio.lowlevel.ParkingLot()  # publishers waiting for buffer room
        self._worker_exited = trio.lowlevel.ParkingLot()
        self._events_send, self._events = trio.open_memory_channel[_Event](math.inf)
        self._workers: dict[int, _Worker] = {}
        self._starting = 0  # spawned workers that have not yet asked for work
        self._worker_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._timers: trio.Nursery | None = None
        self._pending_respawns = 0
        self._paused = False  # restart-all in progress: workers take nothing new
        self.held = False  # paused by an operator: nothing new starts (intake fills the buffer)
        self._closed = False  # intake closed: stopping or escalating
        self.started = False
        self.finished = trio.Event()

        self.received = 0
        self.processed = 0
        self.escalations = 0
        self.panics = 0
        self.restarts = 0
        self.created = 0
        self.killed = 0
        self.idled = 0
        self.in_flight = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.rejected = 0
        self.timeouts = 0
        self.overloaded = 0
        self.dropped = 0
        self.malformed = 0

    # ------------------------------------------------------------------ intake (the bus Inbox)

    def free_credit(self) -> int:
        if self._closed:
            return 0
        return max(0, self.config.buffer - len(self._buffer))

    async def wait_for_credit(self, at_least: int = 1) -> int:
        at_least = max(1, min(at_least, self.config.buffer))
        while self.free_credit() < at_least:
            if self._closed:
                raise HubStopped(f"group {self.name!r} is closed")
            await self._room.park()
        return self.free_credit()

    def put_nowait(self, delivery: Delivery) -> None:
        if self._closed:
            raise HubStopped(f"group {self.name!r} is closed")
        self._buffer.append(delivery)
        self.received += 1
        if not self.started:
            if self._on_first_message is not None:
                callback, self._on_first_message = self._on_first_message, None
                callback(self)
            return
        self._dispatch()

    async def put(self, delivery: Delivery, *, timeout: float | None = None) -> None:
        if self.free_credit():
            self.put_nowait(delivery)
            return
        wait = self.config.accept_wait if timeout is None else timeout
        with trio.move_on_after(wait):
            await self.wait_for_credit()
            self.put_nowait(delivery)
            return
        self.overloaded += 1
        raise Overloaded(self.name, wait)

    def take_back(self, which: Callable[[Delivery], bool]) -> list[Delivery]:
        taken_back = [delivery for delivery in self._buffer if which(delivery)]
        if taken_back:
            self._buffer = deque(delivery for delivery in self._buffer if not which(delivery))
            if self._room:
                self._room.unpark_all()
        return taken_back

    def note_dropped(self) -> None:
        self.dropped += 1

    def note_malformed(self) -> None:
        self.malformed += 1
        self.dead_lettered += 1

    def _dispatch(self) -> None:
        """A message is waiting: wake an idle worker, or start one if there is none and room."""
        if self._paused or self.held:
            return
        if self._work_ready:
            self._work_ready.unpark()
        elif len(self._buffer) > self._starting and len(self._workers) + self._pending_respawns < self._max:
            self._spawn()

    def _dispatch_buffered(self) -> None:
        for _ in range(min(len(self._buffer), self._max)):
            self._dispatch()

    # ------------------------------------------------------------------ workers

    def _spawn(self) -> None:
        assert self._nursery is not None
        worker = _Worker(next(self._worker_ids))
        self._workers[worker.id] = worker
        self._starting += 1
        self.created += 1
        self._nursery.start_soon(self._worker_main, worker, name=f"{self.name}#worker-{worker.id}")

    def _ensure_min(self) -> None:
        while len(self._workers) + self._pending_respawns < self._min and not self._closed:
            self._spawn()

    def _idle_may_exit(self) -> bool:
        return len(self._workers) > self._min and not self._buffer

    async def _next(self, worker: _Worker) -> Delivery | None:
        idleness = self.config.max_idleness
        while True:
            if worker.stopping:
                worker.exit = _Exit.STOPPED
                return None
            if self._buffer and not (self._paused or self.held):
                delivery = self._take()
                if delivery is not None:
                    if self._room:
                        self._room.unpark()
                    return delivery
            if len(self._workers) > self._min:
                with trio.move_on_after(idleness):
                    await self._work_ready.park()
                    continue
                if self._idle_may_exit() and not worker.stopping:
                    worker.exit = _Exit.IDLE
                    return None
            else:
                await self._work_ready.park()

    def _take(self) -> Delivery | None:
        """The next buffered delivery a worker may start. Ordered: the oldest whose key has no
        message running or held (the first buffered of a key is its oldest), else None."""
        buffer = self._buffer
        if not self._ordered:
            return buffer.popleft()
        for index, delivery in enumerate(buffer):
            key = delivery.message.key
            if key is None or key not in self._lanes:
                del buffer[index]
                if key is not None:
                    self._lanes.add(key)
                return delivery
        return None

    def _free_lane(self, key: str) -> None:
        self._lanes.discard(key)
        if self._buffer and not (self._closed or self._paused):
            self._dispatch()  # a message of that key may be waiting

    def _run_again_first(self, delivery: Delivery) -> None:
        """Ordered: put ``delivery`` back ahead of everything, as its next attempt, so that no
        later message of its key overtakes it."""
        self._holding.discard(delivery)
        message = attrs.evolve(delivery.message, attempt=delivery.message.attempt + 1)
        self._buffer.appendleft(Delivery(message, delivery.subscription, delivery.token))
        assert message.key is not None
        self._free_lane(message.key)

    def _hold_for_retry(self, delivery: Delivery, delay: float) -> None:
        """Ordered: retry ``delivery`` here after ``delay``, its key kept busy meanwhile (a retry
        through the bus would let the key's next messages overtake it)."""
        self._holding.add(delivery)

        async def retry_later() -> None:
            await trio.sleep(delay)
            self._run_again_first(delivery)

        assert self._timers is not None
        self._timers.start_soon(retry_later)

    async def _worker_main(self, worker: _Worker) -> None:
        self._starting -= 1
        ended = False
        try:
            with worker.scope:
                try:
                    async with self._worker_context():
                        await self._work(worker)
                except WorkerProcessDied as error:  # could not start: a panic, no message lost
                    worker.exit = _Exit.PANIC
                    worker.panic = _Panic(error, "".join(tb_module.format_exception(error)), None)
            if worker.scope.cancelled_caught:
                worker.exit = _Exit.KILLED
            ended = True
        finally:
            if not ended:
                worker.exit = _Exit.CANCELLED
            self._on_worker_exit(worker)

    def _worker_context(self) -> AbstractAsyncContextManager[None]:
        """What a worker holds while it lives: its OS process, for process isolation."""
        return self.processes.worker() if self.processes is not None else nullcontext()

    async def _work(self, worker: _Worker) -> None:
        while True:
            delivery = await self._next(worker)
            if delivery is None:
                return
            panic = await self._handle(delivery)
            if panic is not None:
                if self.config.behaviour is not Behaviour.DO_NOTHING:
                    worker.exit = _Exit.PANIC
                    worker.panic = panic  # reported once the worker has left the pool
                    return
                self._events_send.send_nowait(panic)
            if self._one_time:
                worker.exit = _Exit.ONE_TIME
                return

    def _on_worker_exit(self, worker: _Worker) -> None:
        del self._workers[worker.id]
        if worker.exit is _Exit.IDLE:
            self.idled += 1
        elif worker.exit in (_Exit.PANIC, _Exit.KILLED):
            self.killed += 1
        self._worker_exited.unpark_all()
        if worker.exit is _Exit.CANCELLED:
            return  # the whole group is being torn down
        if worker.panic is not None:
            self._events_send.send_nowait(worker.panic)
            return  # the supervisor decides what replaces a panicked worker, and when
        if self._closed or self._paused:
            return
        self._ensure_min()
        if self._buffer and not self._work_ready:
            self._dispatch()

    async def _handle(self, delivery: Delivery) -> _Panic | None:
        """Run the action on one delivery and settle the message; say if the action panicked.
        Ordered, the key's lane is freed once the message is settled; a run cancelled midway
        (a restart, a kill) runs again before the key's later messages."""
        key = delivery.message.key
        if key is None or not self._ordered:
            return await self._run(delivery)
        settled = False
        try:
            panic = await self._run(delivery)
            settled = True
            return panic
        finally:
            if delivery not in self._holding:
                if settled:
                    self._free_lane(key)
                else:
                    self._run_again_first(delivery)

    async def _run(self, delivery: Delivery) -> _Panic | None:
        message = delivery.message
        subscription = delivery.subscription
        config = self.config
        if message.attempt > config.max_attempts:  # redelivered after crashes: a crash loop ends here
            self.dead_lettered += 1
            await subscription.dead_letter(
                delivery,
                reason=f"max_attempts: delivered {message.attempt} times, over {config.max_attempts}, "
                "without finishing",
            )
            return None
        progress = None
        if message.attempt > 1:  # delivered before: an earlier run may have checkpointed
            saved = await subscription.load_progress(message.id)
            progress = None if saved is None else orjson.loads(saved)
        job = Job(message, self.name, self.hub, subscription=subscription, progress=progress)
        self.in_flight += 1
        observer = self.hub.observer  # read per message: set or cleared at any time, for every group
        if observer is not None:
            queue_wait = max(0.0, time.time() - message.created_at)  # another host's clock may be ahead
            started = trio.current_time()
            duration = 0.0
            outcome: Outcome = "cancelled"
        try:
            try:
                if config.timeout is None:
                    await self.action(job)
                else:
                    with trio.fail_after(config.timeout):
                        await self.action(job)
            finally:  # the action's own time: settling the message (an ack on Redis) is not in it
                if observer is not None:
                    duration = trio.current_time() - started
        except Retry as retry:
            outcome = "retry"
            await self._retry_or_dead_letter(job, delivery, "retry requested", retry.delay, None)
            return None
        except Reject as reject:
            outcome = "rejected"
            self.rejected += 1
            self.dead_lettered += 1
            await subscription.dead_letter(delivery, reason=f"rejected: {reject.reason}")
            await self._forget_progress(job, subscription)
            return None
        except Exception as error:  # a panic; Cancelled, KeyboardInterrupt, SystemExit never are
            self.panics += 1
            self.failed += 1
            outcome = "panic"
            if isinstance(error, trio.TooSlowError):
                outcome = "timeout"
                self.timeouts += 1
                error = TimeoutError(f"action {self.name!r} ran over its timeout of {config.timeout}s")
            traceback = "".join(tb_module.format_exception(error))
            await self._retry_or_dead_letter(job, delivery, repr(error), None, traceback)
            return _Panic(error, traceback, message)
        else:
            outcome = "ok"
            self.processed += 1
            await subscription.ack(delivery)
            await self._forget_progress(job, subscription)
            return None
        finally:
            self.in_flight -= 1
            if observer is not None:
                try:
                    observer.observe(self.name, queue_wait, duration, outcome)
                except Exception:  # a broken observer must not take the workers down with it
                    log.exception("group %s: message observer %r failed", self.name, observer)

    async def _retry_or_dead_letter(
        self, job: Job, delivery: Delivery, error: str, delay: float | None, traceback: str | None
    ) -> None:
        attempt = delivery.message.attempt
        if attempt >= self.config.max_attempts:
            self.dead_lettered += 1
            await delivery.subscription.dead_letter(
                delivery,
                reason=f"max_attempts: failed {attempt} of {self.config.max_attempts} attempts",
                error=error,
                traceback=traceback,
            )
            await self._forget_progress(job, delivery.subscription)
            return
        self.retried += 1
        if delay is None:
            delay = self.config.retry_backoff.delay(attempt, self._rng)
        if self._ordered and delivery.message.key is not None:
            self._hold_for_retry(delivery, delay)
        else:
            await delivery.subscription.retry(delivery, delay=delay, error=error)

    @staticmethod
    async def _forget_progress(job: Job, subscription: Subscription) -> None:
        """A settled message's checkpoint is of no more use (a requeued dead letter starts over)."""
        if job.progress is not None:
            await subscription.clear_progress(job.message.id)

    # ------------------------------------------------------------------ supervision

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> GroupOutcome:
        """Supervise until stopped or escalated. Never raises an escalation to the caller."""
        outcome = GroupOutcome()
        if self._closed:  # stopped before it ever ran
            task_status.started()
            self.finished.set()
            return outcome
        reported_started = False
        try:
            async with trio.open_nursery() as timers:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._timers = timers
                    self.started = True
                    self._ensure_min()
                    self._dispatch_buffered()
                    await self._on_started(nursery)
                    task_status.started()
                    reported_started = True
                    outcome = await self._supervise()
                    await self._before_stop()
                    self._close_intake()
                    await self._stop_workers(self.config.shutdown_timeout)
                    self._report_late_panics()
                    await self._close_subscription()
                timers.cancel_scope.cancel()
        except Exception as error:  # a fault of the group itself must not reach the hub raw
            log.exception("group %s failed", self.name)
            outcome = GroupOutcome(
                Escalation(
                    group=self.name,
                    error=error,
                    traceback="".join(tb_module.format_exception(error)),
                    reason="panic" if reported_started else "start_failure",
                    worker_protocol=EscalationProtocol.KILL_AND_ESCALATE,
                    group_protocol=EscalationProtocol.KILL_AND_ESCALATE,
                    pending_messages=tuple(d.message for d in self._buffer),
                    restarts=self.restarts,
                )
            )
            self._buffer.clear()
            if not reported_started:
                task_status.started()
        finally:
            self._closed = True
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
            if isinstance(event, _Panic):
                self._alert(
                    self._escalation(event, "panic", EscalationProtocol.RESUME, EscalationProtocol.RESUME)
                )

    async def _on_started(self, nursery: trio.Nursery) -> None:
        """Hook for masters: start slaves once this group runs."""

    async def _before_stop(self) -> None:
        """Hook for masters: stop slaves before this group's workers."""

    # ------------------------------------------------------------------ operator control

    def pause(self) -> None:
        """Start nothing new; in-flight work finishes. Intake goes on until the buffer is full,
        then the bus holds the rest (Redis) or publishers wait (in-process). Never blocks."""
        self.held = True

    def resume(self) -> None:
        """Undo `pause`."""
        self.held = False
        self._room.unpark_all()
        if self.started:
            self._dispatch_buffered()

    def scale(self, min_workers: int, max_workers: int) -> None:
        """Change the worker bounds while running (`ConfigurationError` if they cannot work).
        Workers above the new maximum leave once their current message is done."""
        config = attrs.evolve(self.config, min_workers=min_workers, max_workers=max_workers)
        self.config = config
        self._min, self._max = config.effective_min, config.effective_max
        if not self.started or self._closed:
            return
        excess = len(self._workers) - self._max
        for worker in list(self._workers.values())[: max(excess, 0)]:
            worker.stopping = True
        if excess > 0:
            self._work_ready.unpark_all()
        self._ensure_min()
        self._dispatch_buffered()

    def restart(self) -> None:
        """Restart every worker, as RESTART_ALL does after a panic (the buffer is kept)."""
        self._events_send.send_nowait(_Restart())

    def request_stop(self) -> None:
        """Ask for a graceful stop (intake closes, in-flight work finishes). Never blocks."""
        self._events_send.send_nowait(_Stop())

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

    def _close_intake(self) -> None:
        self._closed = True
        self._room.unpark_all()  # blocked publishers see HubStopped

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
                pending = await self._stop_for_escalation()
                return GroupOutcome(attrs.evolve(event.escalation, pending_messages=pending))
            if isinstance(event, _Restart):
                self.restarts += 1
                await self._restart_all()
                continue
            if isinstance(event, _Respawn):
                self._pending_respawns -= 1
                if not self._closed and len(self._workers) < self._max:
                    self._spawn()
                continue
            escalation = await self._on_panic(event)
            if escalation is not None:
                return GroupOutcome(escalation)
        return GroupOutcome()  # pragma: no cover - the channel is never closed while running

    async def _on_panic(self, panic: _Panic) -> Escalation | None:
        behaviour = self.config.behaviour
        if behaviour is Behaviour.DO_NOTHING:
            self._alert(
                self._escalation(panic, "panic", EscalationProtocol.RESUME, EscalationProtocol.RESUME)
            )
            return None
        if behaviour is Behaviour.STOP_ALL_AND_ESCALATE:
            pending = await self._stop_for_escalation()
            return self._escalation(
                panic,
                "panic",
                EscalationProtocol.KILL_AND_ESCALATE,
                EscalationProtocol.KILL_AND_ESCALATE,
                pending,
            )
        if not self._intensity.allow(trio.current_time()):
            pending = await self._stop_for_escalation()
            return self._escalation(
                panic,
                "max_restarts",
                EscalationProtocol.KILL_AND_ESCALATE,
                EscalationProtocol.KILL_AND_ESCALATE,
                pending,
            )
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
        panic: _Panic,
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

    def _schedule_respawn(self) -> None:
        backoff = self.config.restart_backoff
        self._pending_respawns += 1
        if backoff is None:
            self._events_send.send_nowait(_Respawn())
            return
        delay = backoff.delay(self._intensity.recent, self._rng)

        async def respawn_later() -> None:
            await trio.sleep(delay)
            self._events_send.send_nowait(_Respawn())

        assert self._timers is not None
        self._timers.start_soon(respawn_later)

    async def _restart_all(self) -> None:
        """Stop every worker gracefully (buffer kept, intake paused), then start fresh ones."""
        self._paused = True
        try:
            await self._stop_workers(self.config.shutdown_timeout)
        finally:
            self._paused = False
        backoff = self.config.restart_backoff
        if backoff is not None:
            await trio.sleep(backoff.delay(self._intensity.recent, self._rng))
        if self._closed:
            return
        self._ensure_min()
        self._dispatch_buffered()

    async def _stop_for_escalation(self) -> tuple[Message, ...]:
        """Close intake, take the unstarted messages (in order), stop the workers, then close the
        subscription (so that what the workers finish is acked, and an ordered group keeps its
        partitions until nothing of them runs here)."""
        await self._before_stop()
        self._close_intake()
        pending = tuple(d.message for d in self._buffer)
        self._buffer.clear()
        await self._stop_workers(self.config.shutdown_timeout)
        await self._close_subscription()
        return pending

    async def _stop_workers(self, timeout: float) -> None:
        """Let every worker finish its current message; cancel those still busy at ``timeout``."""
        for worker in self._workers.values():
            worker.stopping = True
        self._work_ready.unpark_all()
        with trio.move_on_after(timeout):
            while self._workers:
                await self._worker_exited.park()
        if self._workers:
            log.warning(
                "group %s: %d worker(s) still busy after %ss; cancelling them",
                self.name,
                len(self._workers),
                timeout,
            )
            for worker in list(self._workers.values()):
                worker.scope.cancel()
            with trio.CancelScope(shield=True):
                while self._workers:
                    await self._worker_exited.park()

    # ------------------------------------------------------------------ stats

    def stats(self) -> WorkerStat:
        """A consistent snapshot: taken between two checkpoints, so nothing changes under it."""
        config = self.config
        subscription = self.subscription
        return WorkerStat(
            addr=self.name,
            topic=self.topic,
            instance=config.instance,
            behaviour=config.behaviour,
            max_workers=self._max,
            min_workers=self._min,
            total_message_received=self.received,
            total_message_processed=self.processed,
            total_escalations=self.escalations,
            total_panics=self.panics,
            total_restarts=self.restarts,
            available_worker_capacity=self._max - self.in_flight,
            total_current_workers=len(self._workers),
            total_created_workers=self.created,
            total_killed_workers=self.killed,
            total_idled_workers=self.idled,
            buffered=len(self._buffer),
            in_flight=self.in_flight,
            total_failed=self.failed,
            total_retried=self.retried,
            total_dead_lettered=self.dead_lettered,
            total_rejected=self.rejected,
            total_timeouts=self.timeouts,
            total_overloaded=self.overloaded,
            total_dropped=self.dropped,
            total_malformed=self.malformed,
            partitions_owned=subscription.partitions_owned if subscription is not None else 0,
            total_rebalances=subscription.rebalances if subscription is not None else 0,
            **(self.processes.stats() if self.processes is not None else {}),
        )

    def __repr__(self) -> str:
        return f"<WorkerGroup {self.name} topic={self.topic} workers={len(self._workers)}>"


async def attach(group: WorkerGroup, bus: Bus, consumer_group: str) -> None:
    """Subscribe ``group`` (as its own inbox) to its topic."""
    earliest = group.config.start is Start.EARLIEST
    if earliest and not bus.keeps_history:
        raise ConfigurationError(f"start='earliest' needs a bus that keeps history; {bus.url} keeps none")
    config = group.config
    group.subscription = await bus.subscribe(
        group.topic,
        consumer_group,
        group,
        earliest=earliest,
        ordered=config.ordered,
        partitions=config.partitions,
    )
