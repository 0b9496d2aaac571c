"""Master groups: a WorkerGroup that owns slave groups whose lives end with its own."""

from __future__ import annotations

import traceback as tb_module
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .escalation import Escalation
from .group import WorkerGroup
from .policy import EscalationProtocol


class MasterGroup(WorkerGroup):
    """Starts its slaves after itself and stops them before itself. A slave that escalates is
    respawned, counted against the master's restart limit; past it, the master escalates."""

    def __init__(
        self,
        *,
        slave_factories: list[Callable[[], Awaitable[WorkerGroup]]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._slave_factories = slave_factories
        self.slaves: dict[str, WorkerGroup] = {}  # in start order
        self._slaves_stopping = False

    async def _on_started(self, nursery: trio.Nursery) -> None:
        for factory in self._slave_factories:
            await nursery.start(self._run_slave, factory)

    async def _run_slave(
        self, factory: Callable[[], Awaitable[WorkerGroup]], *, task_status: trio.TaskStatus[None]
    ) -> None:
        status: trio.TaskStatus[None] = task_status
        while not self._slaves_stopping:
            try:
                slave = await factory()
            except Exception as error:
                status.started()
                self.escalate(self._slave_escalation(error, "start_failure"))
                return
            if self._slaves_stopping:
                await slave.stop()
                status.started()
                return
            self.slaves[slave.name] = slave
            if self.cooling_down:  # a respawn done while the master stands down: it waits too
                slave.suspend(trio.Event())
            outcome = await slave.run(task_status=status)
            status = trio.TASK_STATUS_IGNORED
            if outcome.escalation is None or self._slaves_stopping:
                return
            if not self._intensity.allow(trio.current_time()):
                self.escalate(self._slave_escalation(outcome.escalation.error, "max_restarts"))
                return
            self.restarts += 1

    def _slave_escalation(self, error: BaseException | None, reason: str) -> Escalation:
        return Escalation(
            group=self.name,
            error=error,
            traceback="".join(tb_module.format_exception(error)) if error is not None else "",
            reason="max_restarts" if reason == "max_restarts" else "start_failure",
            worker_protocol=EscalationProtocol.KILL_AND_ESCALATE,
            group_protocol=EscalationProtocol.KILL_AND_ESCALATE,
            restarts=self.restarts,
        )

    async def _before_stand_down(self) -> None:
        """Slaves stand down with their master, last started first; they keep their buffers."""
        for slave in reversed(list(self.slaves.values())):
            stood_down = trio.Event()
            slave.suspend(stood_down)
            await _first_of(stood_down, slave.finished)

    def _after_come_back(self) -> None:
        for slave in self.slaves.values():
            slave.wake()

    async def _before_stop(self) -> None:
        if self._slaves_stopping:
            return
        self._slaves_stopping = True
        for slave in reversed(list(self.slaves.values())):
            await slave.stop()


async def _first_of(*events: trio.Event) -> None:
    """Wait until any of ``events`` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)
