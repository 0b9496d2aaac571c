"""Escalations and the task that delivers them to callbacks without ever stalling supervision."""

from __future__ import annotations

import inspect
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeAlias

import attrs
import trio

from ..message import Message
from .policy import EscalationProtocol

log = logging.getLogger("actionhub.escalation")

EscalationReason = Literal["panic", "max_restarts", "start_failure"]


@attrs.frozen
class Escalation:
    """A report that something went wrong in a group: a panic, a restart limit hit, a failed start."""

    group: str
    error: BaseException | None
    traceback: str
    reason: EscalationReason
    worker_protocol: EscalationProtocol
    group_protocol: EscalationProtocol
    offending_message: Message | None = None
    pending_messages: tuple[Message, ...] = ()
    restarts: int = 0
    at: float = attrs.field(factory=time.time)
    hub: str = ""  # the hub that reported it
    #: past the restart limit with ``on_max_restarts="cool_down"``: when (epoch seconds) the group
    #: starts again; ``pending_messages`` then are those it handed back to the bus
    cool_down_until: float | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly document of this escalation, as alerting integrations send it."""
        error = self.error
        message = self.offending_message
        return {
            "hub": self.hub,
            "host": socket.gethostname(),
            "group": self.group,
            "reason": self.reason,
            "error": None if error is None else repr(error),
            "error_type": None if error is None else f"{type(error).__module__}.{type(error).__qualname__}",
            "traceback": self.traceback,
            "worker_protocol": self.worker_protocol.value,
            "group_protocol": self.group_protocol.value,
            "restarts": self.restarts,
            "at": self.at,
            "offending_message": None
            if message is None
            else {
                "topic": message.topic,
                "id": message.id,
                "attempt": message.attempt,
                "headers": message.headers,
                "payload": message.payload,
            },
            "cool_down_until": self.cool_down_until,
            "pending_messages": len(self.pending_messages),
            "pending_ids": [m.id for m in self.pending_messages],
        }


EscalationCallback: TypeAlias = Callable[[Escalation], "Awaitable[object] | object"]


def normalize_callbacks(
    on_escalation: EscalationCallback | Sequence[EscalationCallback] | None,
) -> tuple[EscalationCallback, ...]:
    if on_escalation is None:
        return ()
    if callable(on_escalation):
        return (on_escalation,)
    callbacks = tuple(on_escalation)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"on_escalation entries must be callable, got {cb!r}")
    return callbacks


class EscalationDispatcher:
    """Runs escalation callbacks in a task of its own, fed by a bounded queue.

    Supervision only ever calls `report`, which never blocks: a slow, hanging or raising callback
    cannot stall a group. An async callback gets ``callback_timeout`` seconds, then is cancelled.
    A sync callback is called inline in this task, so it must not block (do I/O in an async one).
    If callbacks fall behind by more than ``capacity`` escalations, new ones are dropped, counted
    and logged.
    """

    def __init__(
        self,
        callbacks: tuple[EscalationCallback, ...],
        *,
        callback_timeout: float = 30.0,
        capacity: int = 1000,
        hub_name: str = "",
    ) -> None:
        self.callbacks = callbacks
        self.callback_timeout = callback_timeout
        self._send, self._receive = trio.open_memory_channel[Escalation](capacity)
        self.delivered = 0
        self.dropped = 0
        self.callback_errors = 0
        self.hub_name = hub_name

    def report(self, escalation: Escalation) -> None:
        escalation = attrs.evolve(escalation, hub=self.hub_name)
        log.log(
            logging.WARNING if escalation.reason == "panic" else logging.ERROR,
            "escalation in group %s: %s, %r",
            escalation.group,
            escalation.reason,
            escalation.error,
            extra={
                "hub": escalation.hub,
                "group": escalation.group,
                "reason": escalation.reason,
                "worker_protocol": escalation.worker_protocol.value,
                "group_protocol": escalation.group_protocol.value,
                "restarts": escalation.restarts,
            },
        )
        if not self.callbacks:
            return
        try:
            self._send.send_nowait(escalation)
        except trio.WouldBlock:
            self.dropped += 1
            log.error("escalation callbacks are behind; dropped escalation of %s", escalation.group)
        except trio.ClosedResourceError:
            self.dropped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver escalations until `close` is called and the queue is drained."""
        task_status.started()
        async with self._receive:
            async for escalation in self._receive:
                for callback in self.callbacks:
                    await self._call(callback, escalation)
                self.delivered += 1

    def close(self) -> None:
        """No more escalations will be reported; `run` returns once the queue is drained."""
        self._send.close()

    async def _call(self, callback: EscalationCallback, escalation: Escalation) -> None:
        timeout = self.callback_timeout if math.isfinite(self.callback_timeout) else math.inf
        try:
            with trio.move_on_after(timeout) as scope:
                result = callback(escalation)
                if inspect.isawaitable(result):
                    await result
            if scope.cancelled_caught:
                self.callback_errors += 1
                log.error("escalation callback %r timed out after %ss", callback, timeout)
        except Exception:
            self.callback_errors += 1
            log.exception("escalation callback %r raised", callback)
