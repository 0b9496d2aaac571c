"""``redis://…?mode=pubsub``: Redis pub/sub, fan-out to every subscribed hub, at-most-once.

Every subscribed group of every hub gets each message published while it is subscribed. Nothing
is stored: a message that arrives while the group's buffer is full is dropped and counted
(``WorkerStat.total_dropped``), and retries are kept in-process. Dead letters still go to the
dead-letter stream, like those of the streams transport.
"""

from __future__ import annotations

import logging
import weakref
from functools import partial
from typing import Any

import attrs
import trio

from ...errors import ConfigurationError, HubStopped, MalformedMessage
from ...message import Message
from ..base import Delivery, Inbox, Subscription, no_replicas
from ..dedupe import Dedupe
from .channels import Channel
from .common import RedisBusBase, RedisProgress
from .connection import refusals_as_bus_errors
from .durable import NO_PUBSUB
from .entries import (
    Requeued,
    dead_letter_fields,
)
from .once import publish_once
from .options import RedisOptions
from .wire import Command

log = logging.getLogger("actionhub.redis")


class RedisPubSubBus(RedisBusBase):
    """At-most-once fan-out transport on Redis pub/sub."""

    durable = False

    def __init__(self, url: str, redis_url: str, options: RedisOptions, *, client: Any = None) -> None:
        super().__init__(url, redis_url, options, client=client)
        self._reading: weakref.WeakSet[_PubSubSubscription] = weakref.WeakSet()  # open subscriptions

    def delayed_in_use(self) -> set[str]:
        return {self.keys.delayed_of(s.channel) for s in self._reading if s.open}

    def channel(self, topic: str) -> str:
        return self.keys.stream(topic)

    @refusals_as_bus_errors("publish")
    async def publish(
        self,
        message: Message,
        *,
        delay: float | None = None,
        dedupe: Dedupe | None = None,
        durable: int | None = None,
    ) -> str:
        no_replicas(durable, NO_PUBSUB)
        raw = self.encode(message)
        channel = self.channel(message.topic)
        if delay or dedupe is not None:  # the script: its dedupe key or delayed member makes a
            build = partial(  # resend write nothing twice (once.py)
                publish_once, self.keys, target=channel, topic=message.topic, message_id=message.id,
                raw=raw, kept=False, delay=delay, dedupe=dedupe, kind="p",
            )  # fmt: skip
            first = await self.send_once(self._publish_once, build, what="publish")
            return first.decode() if isinstance(first, bytes) else str(first)
        # a bare PUBLISH, retried as before issue 19: a reply lost after Redis ran it may deliver
        # the message twice (a channel keeps nothing a resend could look for)
        await self.call(
            lambda: self.client.publish(channel, raw),
            what="publish",
            deadline=trio.current_time() + self.options.publish_timeout,
        )
        return message.id

    def _requeue(self, topic: str, again: Requeued, entry_id: bytes) -> list[Command]:
        return [
            ("PUBLISH", self.channel(topic), again.fields["message"]),
            ("XDEL", self.keys.dead(topic), entry_id),
        ]

    async def subscribe(
        self,
        topic: str,
        group: str,
        inbox: Inbox,
        *,
        earliest: bool = False,
        ordered: bool = False,
        partitions: int | None = None,
    ) -> Subscription:
        if ordered:
            raise ConfigurationError(
                "ordered=True needs mode=stream: pub/sub hands every message to every hub, at most once"
            )
        if self._nursery is None:
            raise HubStopped("redis bus is not open")
        subscription = _PubSubSubscription(self, topic, group, inbox)
        await self._nursery.start(subscription.read_loop)
        self._reading.add(subscription)
        return subscription

    def later(self, delay: float, fn: Any, *args: Any) -> None:
        if self._nursery is not None:

            async def run() -> None:
                await trio.sleep(delay)
                fn(*args)

            self._nursery.start_soon(run)


class _PubSubSubscription(RedisProgress, Subscription):
    """One group's subscription to a channel, on its own connection."""

    bus: RedisPubSubBus

    def __init__(self, bus: RedisPubSubBus, topic: str, group: str, inbox: Inbox) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.inbox = inbox
        self.channel = bus.channel(topic)
        self._pubsub: Channel | None = Channel(bus.client, self.channel)  # made again if its node fails
        self._scope = trio.CancelScope()
        self._done = trio.Event()

    def _receive(self, limit: int) -> list[bytes]:
        """Blocking: the messages that arrived, waiting up to ``block`` for the first one."""
        received: list[bytes] = []
        timeout = self.bus.options.block
        pubsub = self._pubsub
        assert pubsub is not None, "closed"
        while len(received) < limit:
            item = pubsub.get_message(timeout=timeout)
            if item is None:
                break
            if item["type"] == "message":
                received.append(item["data"])
            timeout = 0.0
        return received

    async def read_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        bus = self.bus
        pubsub = self._pubsub
        assert pubsub is not None, "closed"
        await bus.call(pubsub.subscribe, what=f"subscribe {self.channel}")
        task_status.started()
        try:
            with self._scope:
                while True:
                    received = await bus.call(
                        lambda: self._receive(1000), what=f"read {self.channel}", blocks=True
                    )
                    for raw in received:
                        await self._deliver(raw)
        finally:
            self._done.set()

    async def _deliver(self, raw: bytes) -> None:
        try:
            message = self.bus.decode_message(self.topic, raw)
        except MalformedMessage as exc:
            self.inbox.note_malformed()
            log.warning("%s: dead-lettered a malformed message: %s", self.channel, exc)
            await self._to_dead(raw, f"malformed: {exc}", attempts=1, error=None, traceback=None)
            return
        self._offer(Delivery(message, self, raw))

    def _offer(self, delivery: Delivery) -> None:
        if self._done.is_set() or self.inbox.free_credit() < 1:
            self.inbox.note_dropped()  # at-most-once: no room means the message is gone
            return
        try:
            self.inbox.put_nowait(delivery)
        except HubStopped:
            self.inbox.note_dropped()

    async def ack(self, delivery: Delivery) -> None:
        pass  # nothing is stored, nothing to acknowledge

    async def retry(self, delivery: Delivery, *, delay: float, error: str | None) -> None:
        message = attrs.evolve(delivery.message, attempt=delivery.message.attempt + 1)
        self.bus.later(delay, self._offer, Delivery(message, self, delivery.token))

    async def dead_letter(
        self, delivery: Delivery, *, reason: str, error: str | None = None, traceback: str | None = None
    ) -> None:
        raw = delivery.message.encode()
        await self._to_dead(raw, reason, attempts=delivery.message.attempt, error=error, traceback=traceback)

    async def _to_dead(
        self, raw: bytes, reason: str, *, attempts: int, error: str | None, traceback: str | None
    ) -> None:
        bus = self.bus
        fields = dead_letter_fields(
            raw,
            topic=self.topic,
            group=self.group,
            reason=reason,
            attempts=attempts,
            error=error,
            traceback=traceback,
        )
        await bus.call(
            lambda: bus.client.xadd(bus.keys.dead(self.topic), fields, maxlen=bus.options.max_dead_letters),
            what="dead-letter",
        )

    @property
    def open(self) -> bool:
        return not self._done.is_set()

    async def close(self) -> None:
        if self._done.is_set() and self._pubsub is None:
            return
        self._scope.cancel()
        await self._done.wait()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await self.bus.call(pubsub.close, what="unsubscribe")
