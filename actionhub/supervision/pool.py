"""WorkerPool: the workers of one group, started on demand and idled out, never more than max.

A worker takes the next delivery its `GroupInbox` allows and has the `MessageRunner` run it. The
pool knows nothing of restarts: a worker whose action panicked leaves (unless the behaviour is
DO_NOTHING) and its `Panic` goes to ``on_panic``; the supervisor decides what replaces it, and
when. Everything that must be atomic (spawning within ``max``, idling out above ``min``) happens
between two checkpoints, which trio guarantees nobody can interleave.
"""

from __future__ import annotations

import enum
import itertools
import logging
import traceback as tb_module
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext

import trio

from .. import tracing
from ..bus.base import Delivery
from ..errors import WorkerProcessDied
from .inbox import GroupInbox
from .policy import Behaviour, GroupConfig, Instance
from .process import ProcessPool
from .runner import MessageRunner, Panic

log = logging.getLogger("actionhub.group")


class _Exit(enum.Enum):
    STOPPED = "stopped"  # told to stop (shutdown, restart-all, cool-down): normal
    IDLE = "idle"  # idle above min for max_idleness: normal
    ONE_TIME = "one_time"  # handled its one message: normal
    PANIC = "panic"  # the action raised: a restart case
    KILLED = "killed"  # cancelled by the pool after a deadline
    CANCELLED = "cancelled"  # cancelled from outside (the hub's nursery): nothing is replaced


class _Worker:
    __slots__ = ("exit", "id", "joined", "panic", "scope", "stopping")

    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.scope = trio.CancelScope()
        self.stopping = False
        self.joined = False  # has taken a message (or left)
        self.exit = _Exit.STOPPED
        self.panic: Panic | None = None


class WorkerPool:
    """The workers of one group. ``paused`` (a restart-all or a cool-down under way), ``held``
    (an operator's pause) and ``closed`` (stopping for good) each keep workers from starting
    anything new; ``pending_respawns`` are replacements the supervisor has promised."""

    def __init__(
        self,
        name: str,
        *,
        config: GroupConfig,
        inbox: GroupInbox,
        runner: MessageRunner,
        processes: ProcessPool | None,
        on_panic: Callable[[Panic], None],
    ) -> None:
        self.name = name
        self.inbox = inbox
        self.runner = runner
        self.processes = processes
        self._on_panic = on_panic
        self._one_time = config.instance is Instance.ONE_TIME
        self._resume_after_panic = config.behaviour is Behaviour.DO_NOTHING
        self._max_idleness = config.max_idleness
        self.min, self.max = config.effective_min, config.effective_max
        self._workers: dict[int, _Worker] = {}
        self._starting = 0  # spawned workers whose task has not run yet
        self._joining = 0  # spawned workers that have not taken their first message yet
        self._ids = itertools.count(1)
        self._work_ready = trio.lowlevel.ParkingLot()  # idle workers wait here
        self._worker_exited = trio.lowlevel.ParkingLot()
        self.nursery: trio.Nursery | None = None
        self.pending_respawns = 0
        self.paused = False
        self.held = False
        self.closed = False
        self.created = 0
        self.killed = 0
        self.idled = 0

    def __len__(self) -> int:
        return len(self._workers)

    # ------------------------------------------------------------------ starting

    def dispatch(self) -> None:
        """A message is waiting: wake an idle worker, or start one if there is none and room.
        Workers start one after the other: each one, as its task starts, starts the next if more
        messages wait than the workers about to take one. A burst thus gets as many workers as
        it keeps busy (all of them, within a few scheduler ticks, for actions that wait on I/O),
        not one per message it holds when its actions take no time."""
        if self.paused or self.held or self.closed:
            return
        if self._work_ready:
            self._work_ready.unpark()
        elif not self._starting:
            self._ramp_up()

    def _ramp_up(self) -> None:
        """Start one more worker if more messages wait than the workers about to take one."""
        if len(self.inbox) > self._joining and len(self._workers) + self.pending_respawns < self.max:
            self.spawn()

    def dispatch_buffered(self) -> None:
        for _ in range(min(len(self.inbox), self.max)):
            self.dispatch()

    def spawn(self) -> None:
        assert self.nursery is not None
        worker = _Worker(next(self._ids))
        self._workers[worker.id] = worker
        self._starting += 1
        self._joining += 1
        self.created += 1
        self.nursery.start_soon(self._worker_main, worker, name=f"{self.name}#worker-{worker.id}")

    def respawn(self) -> None:
        """A promised replacement is due."""
        self.pending_respawns = max(0, self.pending_respawns - 1)
        if not self.closed and len(self._workers) < self.max:
            self.spawn()

    def ensure_min(self) -> None:
        while len(self._workers) + self.pending_respawns < self.min and not self.closed:
            self.spawn()

    def scale(self, min_workers: int, max_workers: int) -> None:
        """New bounds; workers above the new maximum leave once their current message is done."""
        self.min, self.max = min_workers, max_workers
        if self.closed or self.paused or self.nursery is None:
            return
        excess = len(self._workers) - self.max
        for worker in list(self._workers.values())[: max(excess, 0)]:
            worker.stopping = True
        if excess > 0:
            self._work_ready.unpark_all()
        self.ensure_min()
        self.dispatch_buffered()

    # ------------------------------------------------------------------ stopping

    async def stop_all(self, timeout: float) -> None:
        """Let every worker finish its current message; cancel those still busy at ``timeout``."""
        for worker in self._workers.values():
            worker.stopping = True
        self._work_ready.unpark_all()
        self.runner.stop_waiting()  # not started: their deliveries go back to the buffer at once
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

    # ------------------------------------------------------------------ a worker's life

    def _idle_may_exit(self) -> bool:
        return len(self._workers) > self.min and not self.inbox

    async def _next(self, worker: _Worker) -> Delivery | None:
        while True:
            if worker.stopping:
                worker.exit = _Exit.STOPPED
                return None
            if not (self.paused or self.held):
                delivery = self.inbox.take()
                if delivery is not None:
                    self._joined(worker)
                    return delivery
            if len(self._workers) > self.min:
                with trio.move_on_after(self._max_idleness):
                    await self._work_ready.park()
                    continue
                if self._idle_may_exit() and not worker.stopping:
                    worker.exit = _Exit.IDLE
                    return None
            else:
                await self._work_ready.park()

    async def _worker_main(self, worker: _Worker) -> None:
        tracing.forget_span()  # spawned by a publish inside a run, it would keep that run's span
        self._starting -= 1
        if not (self.paused or self.held or self.closed):
            self._ramp_up()
        ended = False
        try:
            with worker.scope:
                try:
                    async with self._worker_context():
                        await self._work(worker)
                except WorkerProcessDied as error:  # could not start: a panic, no message lost
                    worker.exit = _Exit.PANIC
                    worker.panic = Panic(error, "".join(tb_module.format_exception(error)), None)
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
            panic = await self.runner.handle(delivery)
            if panic is not None:
                if not self._resume_after_panic:
                    worker.exit = _Exit.PANIC
                    worker.panic = panic  # reported once the worker has left the pool
                    return
                self._on_panic(panic)
            if self._one_time:
                worker.exit = _Exit.ONE_TIME
                return

    def _joined(self, worker: _Worker) -> None:
        if not worker.joined:
            worker.joined = True
            self._joining -= 1

    def _on_worker_exit(self, worker: _Worker) -> None:
        self._joined(worker)
        del self._workers[worker.id]
        if worker.exit is _Exit.IDLE:
            self.idled += 1
        elif worker.exit in (_Exit.PANIC, _Exit.KILLED):
            self.killed += 1
        self._worker_exited.unpark_all()
        if worker.exit is _Exit.CANCELLED:
            return  # the whole group is being torn down
        if worker.panic is not None:
            self._on_panic(worker.panic)
            return  # the supervisor decides what replaces a panicked worker, and when
        if self.closed or self.paused:
            return
        self.ensure_min()
        if self.inbox and not self._work_ready:
            self.dispatch()
