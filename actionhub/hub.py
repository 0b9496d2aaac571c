"""ActionHub: binds actions to topics on a bus and supervises a WorkerGroup for each."""

from __future__ import annotations

import contextvars
import logging
import os
import secrets
import time
import traceback as tb_module
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from . import tracing
from ._messaging import A, Messaging, _State
from .bus.base import Bus, DeadLetter, Watch
from .bus.dedupe import MessageIds
from .bus.url import open_bus
from .errors import ActionHubError, ConfigurationError, HubStopped
from .inspect import apply_command, encode_answer, redact, snapshot_of
from .registry.templates import Action, WorkerTemplate, WorkerTemplateRegistry
from .scheduling import Scheduler
from .stats import WorkerStat
from .supervision.escalation import (
    Escalation,
    EscalationCallback,
    EscalationDispatcher,
    normalize_callbacks,
)
from .supervision.group import WorkerGroup, attach, check_start
from .supervision.master import MasterGroup
from .supervision.policy import EscalationProtocol, OnMaxRestarts
from .supervision.runner import MessageObserver

log = logging.getLogger("actionhub.hub")

_running_hub: contextvars.ContextVar[ActionHub | None] = contextvars.ContextVar(
    "actionhub_running", default=None
)


class ActionHub(Messaging):
    """Binds named actions to topics on a bus and supervises a WorkerGroup for each.

    A hub runs once: ``async with hub.running(): ...`` (or ``await hub.run()`` in a nursery).
    """

    def __init__(
        self,
        bus: str | Bus = "memory://",
        *,
        registry: WorkerTemplateRegistry | None = None,
        on_escalation: EscalationCallback | Sequence[EscalationCallback] | None = None,
        name: str | None = None,
        escalation_timeout: float = 30.0,
        announce_interval: float = 2.0,
    ) -> None:
        """``announce_interval``: seconds between two snapshots of this hub published on the bus
        (read by ``actionhub stats`` and `actionhub.inspect`); each expires after three intervals."""
        self.bus: Bus = open_bus(bus) if isinstance(bus, str) else bus
        self.name = name or f"hub-{os.getpid()}-{secrets.token_hex(3)}"
        self.registry = registry
        self._own = WorkerTemplateRegistry()
        callbacks = normalize_callbacks(on_escalation)
        self._dispatcher = EscalationDispatcher(
            callbacks, callback_timeout=escalation_timeout, hub_name=self.name
        )
        for callback in callbacks:  # integrations that use the hub's own bus (EscalationStream)
            bind_hub = getattr(callback, "bind_hub", None)
            if bind_hub is not None:
                bind_hub(self)
        self._groups: dict[str, WorkerGroup] = {}  # live top-level groups, in start order
        self._watches: dict[str, Watch] = {}  # lazy templates waiting for their first message
        self._state = _State.NEW
        self._nursery: trio.Nursery | None = None
        self._stop_requested = trio.Event()
        self._stopped = trio.Event()
        self._ids = MessageIds()
        self.announce_interval = announce_interval
        self.observer: MessageObserver | None = None  # told about every message run (metrics)
        #: the escalation of a group with ``on_max_restarts="stop_hub"`` that stopped this hub
        self.stopped_by: Escalation | None = None
        self.schedules = Scheduler(self)  # the schedules this hub declares, and their one task

    # ------------------------------------------------------------------ binding

    def action(
        self, name: str, *, topic: str | None = None, group: str | None = None, **config: Any
    ) -> Callable[[A], A]:
        """Decorator: run ``fn`` for every message of ``topic`` (default: ``name``) in a
        supervised group configured by ``config`` (see `GroupConfig`; ``payload=T``, or
        ``fn(job: Job[T])``, validates each payload as ``T``: `actionhub.payloads`)."""

        def decorate(fn: A) -> A:
            self.bind(name, fn, topic=topic, group=group, **config)
            return fn

        return decorate

    def bind(
        self, name: str, fn: Action, *, topic: str | None = None, group: str | None = None, **config: Any
    ) -> WorkerTemplate:
        """Bind ``fn`` as action ``name``; on a running hub its group starts at once."""
        if self._state in (_State.STOPPING, _State.STOPPED):
            raise HubStopped(f"hub {self.name} is stopped")
        template = WorkerTemplate.build(name, fn, topic=topic, group=group, **config)
        if name in self._groups or (self.registry is not None and self.registry.has(name)):
            raise ConfigurationError(f"an action named {name!r} is already bound")
        self._own.register(template)
        if self._state is _State.RUNNING:
            assert self._nursery is not None
            self._nursery.start_soon(self._start_template, template, False)
        return template

    async def unbind(self, name: str) -> None:
        """Stop action ``name`` gracefully and forget it; the name can be bound again."""
        if self._own.has(name):
            self._own.delete(name)
        elif name not in self._groups:
            raise KeyError(f"no action named {name!r} is bound")
        group = self._groups.pop(name, None)
        if group is not None:
            await group.stop()

    def templates(self) -> list[WorkerTemplate]:
        """The actions bound to this hub and those of its registry, in start order."""
        return [*self._own, *(self.registry or ())]

    def configure(self, *, bus: str | Bus | None = None, name: str | None = None) -> None:
        """Before the hub runs, put it on another ``bus`` or give it another ``name`` (what
        ``actionhub run --bus --name`` does); `None` keeps the current one."""
        if self._state is not _State.NEW:
            raise ConfigurationError(f"hub {self.name} has already started; configure it before")
        if bus is not None:
            self.bus = open_bus(bus) if isinstance(bus, str) else bus
        if name is not None:
            if not name.strip():
                raise ConfigurationError("a hub name must not be empty")
            self.name = name
            self._dispatcher.hub_name = name

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or `stop` is called; then stop gracefully."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"hub {self.name} has already run; make a new ActionHub")
        self.schedules.check()  # declared before configure(bus=...): they may not fit this bus
        self._state = _State.RUNNING
        token = _running_hub.set(self)
        try:
            async with self.bus.open(self.name), trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._dispatcher.run)
                async with trio.open_nursery() as operations:
                    # listening before announcing: whoever sees this hub can steer it
                    await operations.start(self._serve_control)
                    for template in self._own:
                        await self._start_template(template, False)
                    for template in self.registry or ():
                        await self._start_template(template, True)
                    self.schedules.serve(operations)
                    operations.start_soon(self._announce, time.time())
                    log.info(
                        "hub %s running on %s with %d group(s)",
                        self.name,
                        redact(self.bus.url),
                        len(self._groups),
                        extra={"hub": self.name, "bus": redact(self.bus.url), "groups": len(self._groups)},
                    )
                    task_status.started()
                    await self._stop_requested.wait()
                    self._state = _State.STOPPING
                    for watch in self._watches.values():
                        watch.close()
                    self._watches.clear()
                    async with trio.open_nursery() as stoppers:
                        for group in list(self._groups.values()):
                            stoppers.start_soon(group.stop)
                    operations.cancel_scope.cancel()
                await self._withdraw()
                self._dispatcher.close()  # drains what is queued, each callback within its timeout
        finally:
            self._state = _State.STOPPED
            self._nursery = None
            self._stopped.set()
            _running_hub.reset(token)
            log.info("hub %s stopped", self.name, extra={"hub": self.name})

    async def _announce(self, started_at: float) -> None:
        while True:
            snapshot = snapshot_of(self, started_at).to_json()
            try:
                await self.bus.announce(self.name, snapshot, ttl=3 * self.announce_interval)
            except ActionHubError as error:
                log.warning(
                    "hub %s could not announce itself: %s", self.name, error, extra={"hub": self.name}
                )
            await trio.sleep(self.announce_interval)

    async def _withdraw(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self.bus.withdraw(self.name)
            except ActionHubError as error:
                log.warning("hub %s could not withdraw its announcement: %s", self.name, error)

    async def _serve_control(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.bus.control_requests() as requests:
            task_status.started()
            async for request in requests:
                answer = apply_command(self, request.command)
                log.warning(
                    "hub %s: operator command: %s",
                    self.name,
                    answer.detail,
                    extra={"hub": self.name, "outcome": answer.outcome},
                )
                await request.answer(encode_answer(answer))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ActionHub]:
        """``async with hub.running():`` starts every group; leaving the block stops gracefully.
        If the hub cannot start (say, `BusError`: Redis refused the password), that error is
        raised as itself, not inside an exception group."""
        started = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.run)
                started = True
                try:
                    yield self
                finally:
                    self._stop_requested.set()
        except BaseExceptionGroup as group:
            if not started and len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def stop(self) -> None:
        """Graceful stop: intake closes, in-flight work gets ``shutdown_timeout`` to finish.
        Called from inside one of this hub's actions it only requests the stop (an action
        cannot wait for its own end)."""
        if self._state is _State.NEW:
            self._state = _State.STOPPED
            self._stopped.set()
            return
        self._stop_requested.set()
        if _running_hub.get() is not self:
            await self._stopped.wait()

    @property
    def is_running(self) -> bool:
        return self._state is _State.RUNNING

    @property
    def is_stopping(self) -> bool:
        """Stopping gracefully: intake closed, in-flight work finishing."""
        return self._state is _State.STOPPING

    async def _start_template(self, template: WorkerTemplate, lazy: bool) -> None:
        """Start ``template``'s group; ``lazy``: on its first message (on a bus that can watch
        a topic, nothing exists for it until then)."""
        try:
            if lazy:
                watch = await self.bus.watch(
                    template.topic,
                    template.group,
                    partial(self._start_watched, template),
                    earliest=check_start(template.config, self.bus),
                )
                if watch is not None:
                    self._watches[template.name] = watch
                    return
            group = self._make_group(template, lazy)
            self._groups[template.name] = group
            await attach(group, self.bus, template.group)
        except Exception as error:
            self._groups.pop(template.name, None)
            self._report_start_failure(template.name, error)
            return
        if not lazy:
            assert self._nursery is not None
            await self._nursery.start(self._supervise, group)

    async def _start_watched(self, template: WorkerTemplate) -> None:
        if self._watches.pop(template.name, None) is not None and self._state is _State.RUNNING:
            await self._start_template(template, False)

    def _start_lazily(self, group: WorkerGroup) -> None:
        if self._nursery is not None and self._state is _State.RUNNING:
            self._nursery.start_soon(self._supervise, group)

    async def _supervise(
        self, group: WorkerGroup, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        tracing.forget_span()  # a lazy group may start from a publish inside a run
        outcome = await group.run(task_status=task_status)
        if outcome.escalated and self._groups.get(group.name) is group:
            del self._groups[group.name]  # the group closed its subscription itself
            log.error(
                "hub %s removed group %s after an escalation",
                self.name,
                group.name,
                extra={"hub": self.name, "group": group.name},
            )
        if outcome.stops_hub and self._state is _State.RUNNING:
            if self.stopped_by is None:
                self.stopped_by = outcome.escalation
            log.critical(
                "hub %s stops: group %s went past its restart limit (on_max_restarts='stop_hub')",
                self.name,
                group.name,
                extra={"hub": self.name, "group": group.name, "reason": "max_restarts"},
            )
            self._stop_requested.set()

    def _make_group(self, template: WorkerTemplate, lazy: bool) -> WorkerGroup:
        common: dict[str, Any] = dict(
            name=template.name,
            topic=template.topic,
            action=template.fn,
            config=template.config,
            hub=self,
            report=self._dispatcher.report,
            on_first_message=self._start_lazily if lazy else None,
            codec=template.codec,
        )
        if not template.slaves:
            return WorkerGroup(**common)

        def slave_factory(slave_template: Any) -> Any:
            async def make() -> WorkerGroup:
                name = template.slave_name(slave_template)
                slave = WorkerGroup(
                    name=name,
                    topic=name,
                    action=slave_template.fn,
                    # past its own limit a slave ends and its master decides (a respawn, counted
                    # against the master's limit)
                    config=attrs.evolve(slave_template.config, on_max_restarts=OnMaxRestarts.REMOVE),
                    hub=self,
                    report=self._dispatcher.report,
                    codec=slave_template.codec,
                )
                await attach(slave, self.bus, name)
                return slave

            return make

        return MasterGroup(slave_factories=[slave_factory(s) for s in template.slaves], **common)

    def _report_start_failure(self, name: str, error: Exception) -> None:
        log.error("group %s failed to start: %r", name, error, extra={"hub": self.name, "group": name})
        self._dispatcher.report(
            Escalation(
                group=name,
                error=error,
                traceback="".join(tb_module.format_exception(error)),
                reason="start_failure",
                worker_protocol=EscalationProtocol.KILL_AND_ESCALATE,
                group_protocol=EscalationProtocol.KILL_AND_ESCALATE,
            )
        )

    # ------------------------------------------------------------------ introspection

    def stats(self) -> list[WorkerStat]:
        """One snapshot per running group, masters before their slaves."""
        out: list[WorkerStat] = []
        for group in list(self._groups.values()):
            if not group.started:
                continue
            out.append(group.stats())
            if isinstance(group, MasterGroup):
                out.extend(s.stats() for s in group.slaves.values() if s.started and not s.finished.is_set())
        return out

    def group(self, name: str) -> WorkerGroup:
        """The live group of action ``name`` (or a slave, by its full name)."""
        if name in self._groups:
            return self._groups[name]
        for group in self._groups.values():
            if isinstance(group, MasterGroup) and name in group.slaves:
                return group.slaves[name]
        raise KeyError(f"no running group named {name!r}")

    async def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``topic``, each with its reason and error."""
        return await self.bus.dead_letters(topic, limit=limit)

    async def requeue_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        """Publish dead letters of ``topic`` again (all, or those ids) as first attempts."""
        return await self.bus.requeue_dead_letters(topic, ids)

    async def purge_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        """Delete dead letters of ``topic`` (all, or those ids)."""
        return await self.bus.purge_dead_letters(topic, ids)

    def __repr__(self) -> str:
        return f"<ActionHub {self.name} {self.bus.url} {self._state.value}>"
