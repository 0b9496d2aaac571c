"""``memory://``: the in-process bus, with the ack / retry / dead-letter semantics of streams.

It is the embedded default and the test double of the bus seam. Publishing puts the message
straight into each consumer group's buffer (waiting up to the group's ``accept_wait`` for room,
then `Overloaded`), so there is no hidden unbounded queue. Payloads are copied through JSON on
publish, so an action sees exactly what it would see from Redis.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import orjson
import trio

from .. import tracing
from ..errors import ConfigurationError, HubStopped, Overloaded
from ..message import DEFAULT_MAX_MESSAGE_BYTES, Message
from .base import (
    Bus,
    ConsumerGroupInfo,
    ControlRequest,
    DeadLetter,
    Delivery,
    Inbox,
    ReplyChannel,
    Subscription,
    TopicInfo,
    Watch,
    no_replicas,
)
from .dedupe import Dedupe, DedupeWindows
from .statuses import MemoryStatuses
from .ticks import ScheduleState, Tick, TickLedger, TicksFired


class MemoryBus(Bus):
    """In-process transport. One instance may be shared by several hubs in one process."""

    durable = False

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_dead_letters: int = 10_000,
        url: str = "memory://",
    ) -> None:
        self.url = url
        self.max_message_bytes = max_message_bytes
        self._groups: dict[str, dict[str, list[_MemorySubscription]]] = {}
        self._watches: dict[str, list[_MemoryWatch]] = {}
        self._dead: dict[str, deque[DeadLetter]] = {}
        self._max_dead = max_dead_letters
        self._replies: dict[str, trio.MemorySendChannel[Message]] = {}
        self._nursery: trio.Nursery | None = None
        self._users = 0
        self._round_robin = itertools.count()
        self._dead_ids = itertools.count(1)
        self._announced: dict[str, tuple[float, bytes]] = {}  # hub -> (expiry, snapshot)
        self._controls: list[trio.MemorySendChannel[ControlRequest]] = []
        self._events: dict[str, deque[dict[str, str]]] = {}
        self._progress: dict[tuple[str, str, str], bytes] = {}  # (topic, group, message id) -> state
        self._delayed: dict[str, list[float]] = {}  # topic -> the trio times its delayed messages are due
        self._dedupe = DedupeWindows()
        self._statuses: MemoryStatuses | None = None  # made on first use: results kept in process
        self._ticks = TickLedger()

    @asynccontextmanager
    async def open(
        self, consumer: str = "", *, connect_timeout: float = 10.0, serving: bool = True
    ) -> AsyncIterator[None]:
        if self._nursery is not None:  # shared by several hubs: the first opener runs it
            self._users += 1
            try:
                yield
            finally:
                self._users -= 1
            return
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()  # pending delays die with the bus, like a process

    def _copy(self, message: Message) -> Message:
        try:
            raw = orjson.dumps(message.payload)
        except TypeError as exc:
            raise TypeError(f"payload is not JSON-serialisable: {exc}") from None
        if len(raw) > self.max_message_bytes:
            raise ValueError(f"payload is {len(raw)} bytes, over the limit of {self.max_message_bytes}")
        return attrs.evolve(message, payload=orjson.loads(raw))

    async def publish(
        self,
        message: Message,
        *,
        delay: float | None = None,
        dedupe: Dedupe | None = None,
        durable: int | None = None,
    ) -> str:
        no_replicas(durable, "memory:// lives in this process, with no replica (use durable=0)")
        message = self._copy(message)
        if dedupe is not None:
            first = self._dedupe.claim(message.topic, dedupe, message.id, trio.current_time())
            if first is not None:
                return first
        if self._statuses is not None:  # None until a hub kept or asked for results
            self._statuses.published(message.topic, message.id, time.time())
        if delay is not None and delay > 0:
            self._later(delay, message.topic, self._fan_out, message)
        elif dedupe is None:
            await self._fan_out(message)
        else:
            try:
                await self._fan_out(message)
            except BaseException:  # Overloaded, cancelled: not published, so not the first
                self._dedupe.release(message.topic, dedupe, message.id)
                raise
        return message.id

    async def _fan_out(self, message: Message) -> None:
        for watch in list(self._watches.get(message.topic, ())):
            if watch.group not in self._groups.get(message.topic, {}):
                await watch.fire()  # the group is subscribed when this returns
        for subscriptions in list(self._groups.get(message.topic, {}).values()):
            await self._deliver(subscriptions, message)

    async def _deliver(self, subscriptions: list[_MemorySubscription], message: Message) -> None:
        if not subscriptions:
            return
        if len(subscriptions) == 1:
            target = subscriptions[0]
        else:  # hubs sharing a group share the work: the next one with room, else round robin
            start = next(self._round_robin)
            ordered = [subscriptions[(start + i) % len(subscriptions)] for i in range(len(subscriptions))]
            target = next((s for s in ordered if s.inbox.free_credit() > 0), ordered[0])
        inbox = target.inbox
        if inbox.free_credit() > 0:
            inbox.put_nowait(Delivery(message, target))
        else:
            await inbox.put(Delivery(message, target))
        target.unsettled += 1

    def _later(self, delay: float, topic: str, fn: object, *args: object) -> None:
        if self._nursery is None:
            raise HubStopped("memory bus is not open")
        due = trio.current_time() + delay
        waiting = self._delayed.setdefault(topic, [])
        waiting.append(due)

        async def later() -> None:
            tracing.forget_span()  # a delayed publish made inside a run
            try:
                await trio.sleep_until(due)
            finally:  # due, or the bus closed: it waits no more either way
                waiting.remove(due)
            await fn(*args)  # type: ignore[operator]

        self._nursery.start_soon(later)

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
        # ordered: one process, so the group's own per-key lanes are the whole of it
        subscription = _MemorySubscription(self, topic, group, inbox)
        self._groups.setdefault(topic, {}).setdefault(group, []).append(subscription)
        return subscription

    async def watch(
        self, topic: str, group: str, on_message: Callable[[], Awaitable[None]], *, earliest: bool = False
    ) -> Watch:
        watch = _MemoryWatch(self, topic, group, on_message)
        self._watches.setdefault(topic, []).append(watch)
        return watch

    def _unsubscribe(self, subscription: _MemorySubscription) -> None:
        groups = self._groups.get(subscription.topic, {})
        members = groups.get(subscription.group, [])
        if subscription in members:
            members.remove(subscription)
        if not members:
            groups.pop(subscription.group, None)
        if not groups:
            self._groups.pop(subscription.topic, None)

    async def _redeliver(self, subscription: _MemorySubscription, message: Message) -> None:
        members = self._groups.get(subscription.topic, {}).get(subscription.group)
        if not members:
            self._add_dead_letter(
                DeadLetter(
                    message,
                    reason="group gone: nobody consumes it any more",
                    group=subscription.group,
                    attempts=message.attempt - 1,
                )
            )
            return
        try:
            try:
                await self._deliver(members, message)
            except Overloaded:  # the group took this message once: it may go over its buffer for it
                members[0].inbox.put_nowait(Delivery(message, members[0]))
                members[0].unsettled += 1
        except HubStopped:
            self._add_dead_letter(
                DeadLetter(
                    message,
                    reason="group stopped before the retry was due",
                    group=subscription.group,
                    attempts=message.attempt - 1,
                )
            )

    def _add_dead_letter(self, letter: DeadLetter) -> None:
        letters = self._dead.setdefault(letter.message.topic, deque(maxlen=self._max_dead))
        letters.append(attrs.evolve(letter, id=str(next(self._dead_ids))))

    async def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        return list(itertools.islice(self._dead.get(topic, ()), limit))

    async def requeue_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        taken = self._take_dead(topic, ids)
        for letter in taken:
            await self.publish(attrs.evolve(letter.message, attempt=1))
        return len(taken)

    async def purge_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        return len(self._take_dead(topic, ids))

    def _take_dead(self, topic: str, ids: list[str] | None) -> list[DeadLetter]:
        letters = self._dead.get(topic, deque())
        wanted = None if ids is None else set(ids)
        taken = [dl for dl in letters if wanted is None or dl.id in wanted]
        kept = [dl for dl in letters if wanted is not None and dl.id not in wanted]
        letters.clear()
        letters.extend(kept)
        return taken

    @asynccontextmanager
    async def reply_channel(self) -> AsyncIterator[ReplyChannel]:
        address = f"reply:{secrets.token_hex(8)}"
        send, receive = trio.open_memory_channel[Message](math.inf)
        self._replies[address] = send
        try:
            yield _MemoryReplyChannel(address, receive)
        finally:
            del self._replies[address]
            send.close()
            receive.close()

    async def send_reply(self, address: str, message: Message) -> None:
        channel = self._replies.get(address)
        if channel is not None:
            channel.send_nowait(self._copy(message))

    # ------------------------------------------------------------------ operating many hubs

    async def announce(self, hub: str, snapshot: bytes, ttl: float) -> None:
        self._announced[hub] = (trio.current_time() + ttl, snapshot)

    async def withdraw(self, hub: str) -> None:
        self._announced.pop(hub, None)

    async def announcements(self) -> list[bytes]:
        now = trio.current_time()
        return [snapshot for expiry, snapshot in self._announced.values() if expiry > now]

    @asynccontextmanager
    async def control_requests(self) -> AsyncIterator[trio.MemoryReceiveChannel[ControlRequest]]:
        send, receive = trio.open_memory_channel[ControlRequest](100)
        self._controls.append(send)
        try:
            yield receive
        finally:
            self._controls.remove(send)
            send.close()

    async def send_control(self, command: bytes, *, timeout: float, expect: int) -> list[bytes]:
        answers_send, answers = trio.open_memory_channel[bytes](math.inf)
        for hub in list(self._controls):
            hub.send_nowait(_MemoryControlRequest(command, answers_send))
        received: list[bytes] = []
        with trio.move_on_after(timeout):
            while len(received) < expect:
                received.append(await answers.receive())
        return received

    async def record(self, stream: str, fields: dict[str, str]) -> None:
        self._events.setdefault(stream, deque(maxlen=self._max_dead)).append(dict(fields))

    async def topic_info(self, topic: str) -> TopicInfo:
        groups = tuple(
            ConsumerGroupInfo(
                name=name,
                consumers=len(members),
                pending=sum(member.unsettled for member in members),
                lag=0,  # a publish hands the message over at once
                oldest_pending_age=None,  # not kept in-process
            )
            for name, members in sorted(self._groups.get(topic, {}).items())
        )
        now = trio.current_time() if self._nursery is not None else 0.0
        due = self._delayed.get(topic, [])
        return TopicInfo(
            topic=topic,
            length=0,
            partitions=0,
            groups=groups,
            delayed=len(due),
            delayed_due=sum(1 for at in due if at <= now),
            next_due_in=max(min(due) - now, 0.0) if due else None,
            dead_letters=len(self._dead.get(topic, ())),
        )

    async def events(self, stream: str, *, limit: int = 100, newest: bool = False) -> list[dict[str, str]]:
        events = self._events.get(stream, deque())
        return list(itertools.islice(reversed(events) if newest else events, limit))

    def statuses(self) -> MemoryStatuses:
        if self._statuses is None:
            self._statuses = MemoryStatuses()
        return self._statuses

    # ------------------------------------------------------------------ schedules

    #: the bus's clock for schedules (seconds since the epoch); None: the wall clock as it was when
    #: first asked, advanced by trio's clock (so a test's MockClock moves it too)
    wall_clock: Callable[[], float] | None = None
    _wall_offset: float | None = None

    def now(self) -> float:
        """The bus's clock for schedules: what Redis's TIME is to a Redis bus."""
        if self.wall_clock is not None:
            return self.wall_clock()
        if self._wall_offset is None:
            self._wall_offset = time.time() - trio.current_time()
        return trio.current_time() + self._wall_offset

    async def fire_ticks(
        self, schedule: str, digest: str, catch_up: str, ticks: Sequence[Tick], *, topic: str | None = None
    ) -> TicksFired:
        # decided and recorded with no await in between: hubs sharing this bus fire each tick once
        before = self._ticks.states([schedule]).get(schedule)
        chosen, fired = self._ticks.fire(schedule, digest, catch_up, ticks, self.now())
        after = self._ticks.states([schedule])[schedule]
        for n, tick in enumerate(chosen):
            try:
                await self._fan_out(self._copy(tick.message))
            except BaseException:  # Overloaded, cancelled, too large: not published, so owed again
                self._ticks.undo(schedule, before, after, tick.at, chosen[n - 1].at if n else None)
                raise
        return fired

    async def schedule_states(self, names: Sequence[str] | None = None) -> dict[str, ScheduleState]:
        return self._ticks.states(names)

    def check_message(self, message: Message) -> None:
        try:
            self._copy(message)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(str(error)) from None


class _MemoryControlRequest(ControlRequest):
    def __init__(self, command: bytes, answers: trio.MemorySendChannel[bytes]) -> None:
        self.command = command
        self._answers = answers

    async def answer(self, reply: bytes) -> None:
        self._answers.send_nowait(reply)


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryBus, topic: str, group: str, inbox: Inbox) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.inbox = inbox
        self.unsettled = 0  # delivered, not yet acked, retried or dead-lettered

    def settled(self) -> None:
        self.unsettled = max(self.unsettled - 1, 0)

    async def ack(self, delivery: Delivery) -> None:
        self.settled()

    async def retry(self, delivery: Delivery, *, delay: float, error: str | None) -> None:
        message = attrs.evolve(delivery.message, attempt=delivery.message.attempt + 1)
        self.settled()
        self.bus._later(delay, self.topic, self.bus._redeliver, self, message)

    async def dead_letter(
        self, delivery: Delivery, *, reason: str, error: str | None = None, traceback: str | None = None
    ) -> None:
        self.settled()
        self.bus._add_dead_letter(
            DeadLetter(
                delivery.message,
                reason=reason,
                error=error,
                traceback=traceback,
                attempts=delivery.message.attempt,
                group=self.group,
                at=time.time(),
            )
        )

    async def close(self) -> None:
        self.bus._unsubscribe(self)

    async def load_progress(self, message_id: str) -> bytes | None:
        return self.bus._progress.get((self.topic, self.group, message_id))

    async def save_progress(self, message_id: str, state: bytes) -> None:
        self.bus._progress[(self.topic, self.group, message_id)] = state

    async def clear_progress(self, message_id: str) -> None:
        self.bus._progress.pop((self.topic, self.group, message_id), None)


class _MemoryReplyChannel(ReplyChannel):
    def __init__(self, address: str, receive: trio.MemoryReceiveChannel[Message]) -> None:
        self.address = address
        self._receive = receive

    async def receive(self) -> Message:
        return await self._receive.receive()


def memory_bus_from_url(url: str) -> MemoryBus:
    from .url import parse_query

    params = parse_query(url, allowed={"max_message_bytes", "max_dead_letters"})
    try:
        return MemoryBus(url=url, **{k: int(v) for k, v in params.items()})
    except ValueError as exc:
        raise ConfigurationError(f"bad memory:// option in {url!r}: {exc}") from None


class _MemoryWatch(Watch):
    def __init__(
        self, bus: MemoryBus, topic: str, group: str, on_message: Callable[[], Awaitable[None]]
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self._on_message = on_message
        self._started: trio.Event | None = None

    async def fire(self) -> None:
        """Start the group (once; a publisher that comes meanwhile waits for it)."""
        if self._started is not None:
            await self._started.wait()
            return
        self._started = trio.Event()
        try:
            await self._on_message()
        finally:
            self._started.set()
            self.close()

    def close(self) -> None:
        watches = self.bus._watches.get(self.topic, [])
        if self in watches:
            watches.remove(self)
        if not watches:
            self.bus._watches.pop(self.topic, None)
