"""The messaging half of `ActionHub`: what a hub publishes, asks and reads back (publish,
publish_many, request, status, result, the replies of its jobs) and the schedules it declares.

A mixin: `ActionHub` (hub.py) inherits it and provides the bus, the name, the message ids, the
`Scheduler` and the lifecycle state these methods check.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar, overload

import attrs
import trio

from . import tracing
from .bus import statuses
from .bus.base import Bus, check_durable
from .bus.dedupe import MessageIds, check_dedupe
from .errors import HubStopped
from .message import JSON, Message, check_key
from .payloads import decode_reply, to_json
from .registry.templates import Action
from .results import MessageStatus
from .scheduling import CatchUp, Schedule, ScheduleOptions, Scheduler

R = TypeVar("R")
A = TypeVar("A", bound=Action)


class _State(enum.Enum):
    """A hub's lifecycle: hub.py moves it along, the methods here check it."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Messaging:
    """`ActionHub`'s messaging API (see `ActionHub`)."""

    # provided by ActionHub (hub.py)
    bus: Bus
    name: str
    schedules: Scheduler
    _ids: MessageIds
    _state: _State

    # ------------------------------------------------------------------ schedules

    @overload
    def schedule(
        self,
        name: str,
        *,
        topic: str,
        payload: JSON = None,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        catch_up: CatchUp = "latest",
        jitter: float = 0,
    ) -> Schedule: ...

    @overload
    def schedule(
        self,
        name: str,
        *,
        topic: None = None,
        payload: JSON = None,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        catch_up: CatchUp = "latest",
        jitter: float = 0,
    ) -> Callable[[A], A]: ...

    def schedule(
        self,
        name: str,
        *,
        topic: str | None = None,
        payload: JSON = None,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        catch_up: CatchUp = "latest",
        jitter: float = 0,
    ) -> Schedule | Callable[[A], A]:
        """Publish ``payload`` to ``topic`` at every tick of ``cron`` (5 fields, in zone ``tz``)
        or ``every`` (seconds or a timedelta), once per tick across every hub declaring it;
        ``catch_up`` ("latest", "all" or "none") says what becomes of ticks missed while no hub
        ran, ``jitter`` delays each tick by up to that many seconds (see `Schedule`). Without
        ``topic``, a decorator put above ``@hub.action(...)``: the schedule publishes to that
        action's topic. Before or while the hub runs."""
        if self._state in (_State.STOPPING, _State.STOPPED):
            raise HubStopped(f"hub {self.name} is stopped")
        options = ScheduleOptions(
            payload=payload, cron=cron, every=every, tz=tz, catch_up=catch_up, jitter=jitter
        )
        return self.schedules.declare(name, topic, options)

    # ------------------------------------------------------------------ messages

    def _check_running(self) -> None:
        if self._state is not _State.RUNNING:
            if self._state is _State.NEW:
                raise HubStopped(f"hub {self.name} is not running yet (use hub.running() or hub.run())")
            raise HubStopped(f"hub {self.name} is stopped")

    async def publish(
        self,
        topic: str,
        payload: object,
        *,
        headers: dict[str, str] | None = None,
        reply_to: str | None = None,
        delay: float | None = None,
        key: str | None = None,
        dedupe_key: str | None = None,
        dedupe_for: float | None = None,
        durable: int | None = None,
    ) -> str:
        """Publish ``payload`` (JSON) to ``topic``; every consumer group of the topic gets it.
        Returns the message id. Raises `Overloaded` if a group's buffer stays full for its
        ``accept_wait`` (in-process bus), `HubStopped` once the hub stops, `BusError` if Redis
        refuses it or stays unreachable for ``publish_timeout``. ``key``: ordered
        groups run the messages of one key one at a time, in publish order (docs/ordering.md).
        ``dedupe_key``: a publish of the same key to ``topic`` within ``dedupe_for`` seconds
        (default 3600) of the first writes nothing and returns the first message's id.
        ``durable``: return only once that many Redis replicas have the message (default: the
        bus URL's ``durable``; docs/reliability.md)."""
        self._check_running()
        if delay is not None and delay < 0:
            raise ValueError("delay must be >= 0")
        dedupe = None if dedupe_key is None and dedupe_for is None else check_dedupe(dedupe_key, dedupe_for)
        check_durable(durable)
        message = Message(
            topic=topic,
            payload=to_json(payload),
            id=self._ids(),
            headers=headers or {},
            reply_to=reply_to,
            key=check_key(key),
        )
        if tracing.tracer() is None:  # the usual case: no partial, no extra coroutine per message
            return await self.bus.publish(message, delay=delay, dedupe=dedupe, durable=durable)
        return await tracing.publishing(
            message, partial(self.bus.publish, delay=delay, dedupe=dedupe, durable=durable), delay=delay
        )

    async def publish_many(
        self,
        topic: str,
        payloads: Iterable[object],
        *,
        headers: dict[str, str] | None = None,
        keys: Iterable[str | None] | None = None,
        durable: int | None = None,
    ) -> list[str]:
        """Publish each of ``payloads`` to ``topic``, in order, in as few round trips as the bus
        allows (on Redis, one transaction per 1,000); returns their ids. When it returns, every
        one of them is on the bus, as with `publish`. ``keys``: one ordering key (or None) per
        payload; ``durable``: as for `publish`. Traced, the batch is one span
        (``messaging.batch.message_count``), the parent of each message's run."""
        self._check_running()
        check_durable(durable)
        shared_headers = dict(headers or {})
        payloads = list(payloads)
        key_list = [None] * len(payloads) if keys is None else [check_key(k) for k in keys]
        if len(key_list) != len(payloads):
            raise ValueError(f"{len(key_list)} keys for {len(payloads)} payloads")
        span = tracing.start_send(topic, batch=len(payloads), headers=shared_headers)
        if span is None:
            return await self._publish_all(topic, payloads, shared_headers, key_list, durable)
        shared_headers = tracing.headers_with_context(span, shared_headers)
        return await tracing.sent(span, self._publish_all(topic, payloads, shared_headers, key_list, durable))

    async def _publish_all(
        self,
        topic: str,
        payloads: list[object],
        headers: dict[str, str],
        keys: Sequence[str | None],
        durable: int | None,
    ) -> list[str]:
        messages = [
            Message(topic=topic, payload=to_json(payload), id=self._ids(), headers=headers, key=key)
            for payload, key in zip(payloads, keys, strict=True)
        ]
        return await self.bus.publish_many(messages, durable=durable)

    @overload
    async def request(
        self, topic: str, payload: object, *, timeout: float, headers: dict[str, str] | None = None
    ) -> Message: ...

    @overload
    async def request(
        self,
        topic: str,
        payload: object,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        reply_type: type[R],
    ) -> R: ...

    async def request(
        self,
        topic: str,
        payload: object,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        reply_type: object | None = None,
    ) -> Any:
        """Publish and wait for the first reply (``job.reply``); `trio.TooSlowError` after
        ``timeout``. With ``reply_type``, the reply's payload decoded as that type
        (`InvalidPayload` if it does not validate), else the reply `Message`."""
        self._check_running()
        async with self.bus.reply_channel() as channel:
            await self.publish(topic, payload, headers=headers, reply_to=channel.address)
            with trio.fail_after(timeout):
                reply = await channel.receive()
        return reply if reply_type is None else decode_reply(reply.payload, reply_type)

    async def status(self, message_id: str) -> MessageStatus:
        """Where message ``message_id`` stands (a topic with a ``keep_result`` group): pending,
        running, retrying, done, dead, or unknown (no record: never kept, or expired)."""
        self._check_running()
        return await statuses.status(self.bus.statuses(), message_id)

    async def result(
        self, message_id: str, timeout: float | None = None, *, result_type: object | None = None
    ) -> Any:
        """Wait for the return value kept for ``message_id`` (``keep_result``); decoded as
        ``result_type`` if given. `MessageDead` if it was dead-lettered, `trio.TooSlowError`
        after ``timeout`` seconds (None: wait as long as it takes)."""
        self._check_running()
        store = self.bus.statuses()
        return await statuses.result(store, message_id, timeout=timeout, result_type=result_type)

    async def _send_reply(self, request: Message, payload: JSON, headers: dict[str, str]) -> None:
        assert request.reply_to is not None
        reply = Message(
            topic=request.reply_to,
            payload=payload,
            id=self._ids(),
            headers={**headers, "in_reply_to": request.id},
        )
        span = tracing.start_send(request.reply_to, reply.id, in_reply_to=request.id, headers=reply.headers)
        if span is None:
            await self.bus.send_reply(request.reply_to, reply)
            return
        reply = attrs.evolve(reply, headers=tracing.headers_with_context(span, reply.headers))
        await tracing.sent(span, self.bus.send_reply(request.reply_to, reply))
