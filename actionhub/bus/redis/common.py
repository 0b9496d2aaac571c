"""What both Redis transports share, over their connection (connection.py) and publishing
(publishing.py): messages to and from the wire, checkpoints, delayed messages, dead letters,
request/reply, operating many hubs, a topic's state and the results store."""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, cast

import trio
from redis.exceptions import ResponseError

from ...errors import BusError, ConfigurationError, MalformedMessage
from ...message import Message, decode
from ..base import ControlRequest, DeadLetter, ReplyChannel, TopicInfo
from ..ticks import ScheduleState, Tick, TicksFired
from . import control, due, schedules, scripts, scripts_cluster
from .cluster import REDIS_ERRORS
from .durable import raise_nested
from .entries import (
    PUBLISH_BATCH,
    Requeued,
    dead_letter_of,
    delayed_member,
    encode_entry,
    requeued,
)
from .layout import ClusterKeys
from .options import RedisOptions, text
from .publishing import Publishing
from .replication import requeue_confirmed
from .results import RedisStatuses
from .slots import key_slot
from .topics import merged, topic_info_call, topic_info_calls, topic_info_of
from .wire import Command


class RedisBusBase(Publishing):
    """The shared Redis features of both transports."""

    durable = False
    #: whether the acker sends the queued status writes before its acks (`RedisStatuses.flush`)
    statuses_before_acks = False

    def __init__(self, url: str, redis_url: str, options: RedisOptions, *, client: Any = None) -> None:
        super().__init__(url, redis_url, options, client=client)
        self._schedule = self.client.register_script(scripts.SCHEDULE)
        self.cluster = isinstance(self.keys, ClusterKeys)  # the cluster layout (layout.py)
        if self.cluster:
            self._due = self.client.register_script(scripts_cluster.DUE)
            self._move_due_script = self.client.register_script(scripts_cluster.MOVE_DUE_C)
            self._topic_info = self.client.register_script(scripts_cluster.TOPIC_INFO_SLOT)
        else:
            self._move_due_script = self.client.register_script(scripts.MOVE_DUE)
            self._topic_info = self.client.register_script(scripts.TOPIC_INFO)
        self._sweep_at = -math.inf  # trio time of the cluster layout's next sweep of every delayed set

    def encode(self, message: Message) -> bytes:
        """The wire-format entry of ``message``, within the size limit."""
        return encode_entry(message, self.options.max_message_bytes)

    def check_message(self, message: Message) -> None:
        try:
            self.encode(message)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(str(error)) from None

    def decode_message(self, topic: str, raw: bytes, default_id: str = "") -> Message:
        """Decode an entry from the wire; `MalformedMessage` if it is not a valid envelope within
        the size limit, or if its ``reply_to`` is not a reply key of this prefix (a reply is an
        LPUSH and an EXPIRE: sent anywhere else it could clobber another application's keys)."""
        message = decode(topic, raw, max_bytes=self.options.max_message_bytes, default_id=default_id)
        reply_prefix = self.keys.reply_prefix
        if message.reply_to is not None and not message.reply_to.startswith(reply_prefix):
            raise MalformedMessage(f"'reply_to' must be a key under {reply_prefix}")
        return message

    # ------------------------------------------------------------------ checkpoints

    async def load_progress(self, key: str) -> bytes | None:
        # MGET, not GET: the least-privilege ACL of the README already grants it
        (state,) = await self.call(lambda: self.client.mget([key]), what="load a checkpoint")
        return cast(bytes | None, state)

    async def save_progress(self, key: str, state: bytes) -> None:
        ttl = max(1, math.ceil(self.options.progress_ttl))
        await self.call(lambda: self.client.set(key, state, ex=ttl), what="save a checkpoint")

    async def clear_progress(self, key: str) -> None:
        await self.call(lambda: self.client.execute_command("DEL", key), what="clear a checkpoint")

    # ------------------------------------------------------------------ delayed messages

    async def schedule(self, kind: str, target: str, group: str, entry: bytes, delay: float) -> None:
        """Deliver ``entry`` after ``delay`` seconds (atomically: it is never lost nor doubled)."""
        member = delayed_member(kind, target, group, entry)
        delayed = self.keys.delayed_of(target)
        await self.call(
            lambda: self._schedule(keys=[delayed], args=[delay, member]),
            what="schedule",
            deadline=trio.current_time() + self.options.publish_timeout,
        )

    async def _move_due(self) -> None:
        """Move due delayed messages to their stream/channel; every hub runs this, the script's
        atomicity makes that safe."""
        if self.cluster:
            await self._move_due_sets()
            return
        ((moved, wait),) = await self.run_scripts(
            [(self._move_due_script, [self.keys.delayed], [500])], what="move delayed"
        )
        if int(moved) < 500:
            seconds = float(wait)
            await trio.sleep(0.25 if seconds < 0 else min(max(seconds, 0.005), 0.25))

    async def _move_due_sets(self) -> None:
        """The cluster layout's `_move_due` (due.py): the delayed sets of the shards in use, and
        every set once per sweep; `DUE` then `MOVE_DUE_C` per set with members due."""
        now = trio.current_time()
        if now >= self._sweep_at:
            self._sweep_at = now + due.SWEEP_EVERY
            sets = list(self.keys.delayed_sets())
        else:
            sets = sorted(self.delayed_in_use())
        if not sets:
            await trio.sleep(due.POLL_EVERY)
            return
        replies = await self.run_scripts(
            [(self._due, [key], [due.DUE_BATCH]) for key in sets], what="move delayed"
        )
        moves = due.move_calls(sets, replies)
        if moves:
            await self.run_scripts(
                [(self._move_due_script, keys, members) for keys, members in moves], what="move delayed"
            )
        await trio.sleep(due.pause(replies))

    def delayed_in_use(self) -> set[str]:
        """The cluster layout: the delayed sets of the shards this hub's subscriptions read (their
        retries and delayed publishes), polled more often than the others."""
        return set()

    async def _start_background(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.keep_running, "moving delayed messages", self._move_due)

    # ------------------------------------------------------------------ dead letters

    async def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        entries = await self.call(
            lambda: self.client.xrange(self.keys.dead(topic), count=limit), what="read dead letters"
        )
        return [dead_letter_of(topic, entry_id, fields) for entry_id, fields in entries]

    async def _take_dead(self, topic: str, ids: list[str] | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        key = self.keys.dead(topic)
        if ids is None:
            return await self.call(lambda: self.client.xrange(key), what="read dead letters")
        if not ids:
            return []

        def read() -> list[tuple[bytes, dict[bytes, bytes]]]:
            with self.client.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.xrange(key, entry_id, entry_id)
                return [entry for found in pipe.execute() for entry in found]

        return await self.call(read, what="read dead letters")

    async def requeue_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        taken = await self._take_dead(topic, ids)
        for start in range(0, len(taken), PUBLISH_BATCH):
            # a chunk is all back, or none: one transaction
            chunk = [c for entry_id, fields in taken[start : start + PUBLISH_BATCH]
                     for c in self._requeue(topic, requeued(topic, fields), entry_id)]  # fmt: skip
            if self.cluster:
                await self._requeue_in_slots(chunk)
                continue
            if self.options.durable:
                await requeue_confirmed(self, chunk)
                continue

            def requeue(chunk: list[Command] = chunk) -> None:
                with self.client.pipeline(transaction=True) as pipe:
                    for command in chunk:
                        pipe.execute_command(*command)
                    pipe.execute()

            await self.call(requeue, what="requeue dead letters")
        return len(taken)

    async def _requeue_in_slots(self, chunk: list[Command]) -> None:
        """The cluster layout's requeue of ``chunk`` (pairs: the write putting a dead letter back,
        its ``XDEL``): those written in the dead letters' slot in one transaction, as in the
        single layout; the others (a keyed letter back to its partition, design §4) all written
        first, in one round trip (per slot with their ``WAIT`` if durable), then all deleted in
        one, so a crash between can only requeue one twice, never lose it."""
        together: list[Command] = []
        writes: list[Command] = []
        deletes: list[Command] = []
        for write, delete in zip(chunk[::2], chunk[1::2], strict=True):
            if key_slot(str(write[1])) == key_slot(str(delete[1])):
                together += (write, delete)
            else:
                writes.append(write)
                deletes.append(delete)
        durable = self.options.durable
        if together:
            if durable:
                await requeue_confirmed(self, together)
            else:
                replies = await self.execute([("MULTI",), *together, ("EXEC",)], what="requeue dead letters")
                raise_nested(replies[-1])
        if durable:  # per slot: each group on the node it goes to, with its WAIT
            by_slot: dict[int, list[Command]] = {}
            for write in writes:
                by_slot.setdefault(key_slot(str(write[1])), []).append(write)
            for group in by_slot.values():
                await requeue_confirmed(self, group, transaction=False)
        elif writes:
            await self.execute(writes, what="requeue dead letters")
        if deletes:
            await self.execute(deletes, what="requeue dead letters")

    @abc.abstractmethod
    def _requeue(self, topic: str, again: Requeued, entry_id: bytes) -> list[Command]:
        """The commands putting one dead letter back and removing it from the dead letters."""

    async def purge_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        key = self.keys.dead(topic)
        if ids is None:
            count = await self.call(lambda: self.client.xlen(key), what="purge dead letters")
            await self.call(lambda: self.client.execute_command("DEL", key), what="purge dead letters")
            return int(count)
        if not ids:
            return 0
        return int(await self.call(lambda: self.client.xdel(key, *ids), what="purge dead letters"))

    # ------------------------------------------------------------------ request / reply

    @asynccontextmanager
    async def reply_channel(self) -> AsyncIterator[ReplyChannel]:
        channel = control.RedisReplyChannel(self, self.keys.new_reply())
        try:
            yield channel
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.call(
                    lambda: self.client.execute_command("DEL", channel.address), what="drop reply key"
                )

    async def send_reply(self, address: str, message: Message) -> None:
        raw = message.encode()
        deadline = trio.current_time() + self.options.publish_timeout
        wire = self.wire
        if wire is not None:  # one write on the trio-driven connection: no thread hop
            commands = (("MULTI",), ("LPUSH", address, raw), ("EXPIRE", address, 60), ("EXEC",))
            await self.call_async(partial(wire.execute, *commands), what="send reply", deadline=deadline)
            return

        def push() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.lpush(address, raw)
                pipe.expire(address, 60)  # a requester that gave up leaves nothing behind
                pipe.execute()

        await self.call(push, what="send reply", deadline=deadline)

    # ------------------------------------------------------------------ operating many hubs

    async def announce(self, hub: str, snapshot: bytes, ttl: float) -> None:
        key = self.keys.hub(hub)
        try:
            await self.call(lambda: self.client.set(key, snapshot, px=int(ttl * 1000)), what="announce")
        except REDIS_ERRORS as error:  # refused (out of memory, say): the hub goes on, says so
            raise BusError(f"redis refused announce: {error}") from error

    async def withdraw(self, hub: str) -> None:
        try:
            await self.call(lambda: self.client.execute_command("DEL", self.keys.hub(hub)), what="withdraw")
        except REDIS_ERRORS as error:  # the announcement expires anyway: say so, stop cleanly
            raise BusError(f"could not withdraw hub {hub}: {error!r}") from error

    async def announcements(self) -> list[bytes]:
        if self.cluster:  # SCAN every primary (redis-py's scan_iter does), then one MGET per key
            keys = await self.call(lambda: list(self.client.scan_iter(match=self.keys.hubs, count=1000)),
                                   what="read announcements")  # fmt: skip
            replies = await self.execute([("MGET", key) for key in keys], what="read announcements")
            return [doc for (doc,) in replies if doc is not None]

        def read() -> list[bytes]:
            keys = list(self.client.scan_iter(match=self.keys.hubs, count=1000))
            return [doc for doc in self.client.mget(keys) if doc is not None] if keys else []

        return await self.call(read, what="read announcements")

    def control_requests(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[ControlRequest]]:
        """Commands arrive on the pub/sub channel ``<prefix>control`` (see control.py)."""
        return control.control_requests(self)

    async def send_control(self, command: bytes, *, timeout: float, expect: int) -> list[bytes]:
        return await control.send_control(self, command, timeout=timeout, expect=expect)

    async def fire_ticks(
        self, schedule: str, digest: str, catch_up: str, ticks: Sequence[Tick], *, topic: str | None = None
    ) -> TicksFired:
        return await schedules.fire_ticks(self, schedule, digest, catch_up, ticks, topic=topic)

    async def schedule_states(self, names: Sequence[str] | None = None) -> dict[str, ScheduleState]:
        return await schedules.schedule_states(self, names)

    async def record(self, stream: str, fields: dict[str, str]) -> None:
        key = self.keys.events(stream)
        await self.call(
            lambda: self.client.xadd(key, fields, maxlen=self.options.max_dead_letters),
            what=f"record {stream}",
        )

    async def events(self, stream: str, *, limit: int = 100, newest: bool = False) -> list[dict[str, str]]:
        key = self.keys.events(stream)
        command: Command = ("XREVRANGE", key, "+", "-") if newest else ("XRANGE", key, "-", "+")
        (entries,) = await self.execute([(*command, "COUNT", limit)], what="read events")
        return [_fields(fields) for _, fields in entries]

    # ------------------------------------------------------------------ topics

    async def topic_partitions(self, topic: str) -> int:
        """How many partition streams ``topic`` has (0: none, or a bus without them)."""
        return 0

    async def topic_info(self, topic: str) -> TopicInfo:
        partitions = await self.topic_partitions(topic)
        pubsub = self.options.mode == "pubsub"
        if self.cluster:  # one call per slot, merged
            found = topic_info_calls(self.keys, topic, partitions, pubsub=pubsub)
            calls = [(self._topic_info, keys, args) for keys, args in found]
            replies = await self.run_scripts(calls, what=f"read the state of {topic}")
            return topic_info_of(topic, partitions, merged(replies))
        keys, args = topic_info_call(self.keys, topic, partitions, pubsub=pubsub)
        (reply,) = await self.run_scripts([(self._topic_info, keys, args)], what=f"read the state of {topic}")
        return topic_info_of(topic, partitions, reply)

    # ------------------------------------------------------------------ results

    def statuses(self) -> RedisStatuses:
        store: RedisStatuses | None = self.__dict__.get("_statuses")
        if store is None:  # made on first use: a bus whose groups keep no results holds none
            store = self._statuses = RedisStatuses(self)
        return store


class RedisProgress:
    """Checkpoints of a Redis subscription's messages (both transports keep them alike)."""

    bus: RedisBusBase
    topic: str
    group: str

    async def load_progress(self, message_id: str) -> bytes | None:
        return await self.bus.load_progress(self.bus.keys.progress(self.topic, self.group, message_id))

    async def save_progress(self, message_id: str, state: bytes) -> None:
        await self.bus.save_progress(self.bus.keys.progress(self.topic, self.group, message_id), state)

    async def clear_progress(self, message_id: str) -> None:
        await self.bus.clear_progress(self.bus.keys.progress(self.topic, self.group, message_id))


def _fields(fields: Sequence[bytes] | dict[bytes, bytes]) -> dict[str, str]:
    """A stream entry's fields: raw from the wire (name, value, name, value, ...) or redis-py's."""
    pairs = fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2], strict=True)
    return {text(name): text(value) for name, value in pairs}


def is_nogroup(error: ResponseError) -> bool:
    return str(error).startswith("NOGROUP")
