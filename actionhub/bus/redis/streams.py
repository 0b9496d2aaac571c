"""``redis://``: Redis Streams with consumer groups, at-least-once.

* One stream per topic (``<prefix><topic>``), one consumer group per action (or its ``group=``),
  created at id 0 so that what was published before the first hub started is not missed.
  Keyed messages go to the topic's partition streams (``<prefix><topic>:p<n>``, see
  docs/ordering.md); a group reads them all with its topic's stream, an ordered group only those
  whose lease it holds.
* Reads are batched: one ``XREADGROUP COUNT <credit / streams>`` over the streams of a group that
  have something new, about as many entries as the group has room for; when to read is the hub's
  one `Reader`'s business (see reader.py), not the group's. Acks are batched too: one pipelined
  ``XACK`` per stream for whatever finished meanwhile. Nothing is acked that did not finish.
* Leases: an entry read by a hub stays in its pending list. A live hub renews the entries it holds
  every ``visibility_timeout / 3`` (XCLAIM JUSTID, checked in a script so a lease another hub
  has taken is never stolen back); an entry idle for ``visibility_timeout`` belongs to a dead hub
  and is reclaimed (XPENDING IDLE, then XCLAIM) by a live one, which looks at least once a second
  (for all its groups in one script: `_look_after`).
  Redis counts deliveries, and each delivery beyond the first is one more attempt, so a crash loop
  ends in the dead letters.
* A retry is scheduled in the delayed set and acked in one script; its entry, when due, carries a
  ``group`` field so that only the group that failed it runs it again (other groups skip it).
* Trimming: every ``trim_interval`` a script trims each consumed stream below the oldest entry that
  any of its groups has not yet delivered or acked (``XTRIM MINID ~``). An undelivered or unacked
  entry is never trimmed, nor one younger than ``publish_timeout`` + 10 s (a publish's resend
  looks for its first attempt's entry there: see once.py); a stream with a group nobody consumes
  any more keeps growing until that group is destroyed (``XGROUP DESTROY``). The same script
  removes consumers that hold nothing and have read nothing for an hour: what killed hubs leave
  behind in ``XINFO CONSUMERS``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import trio

from ...errors import ConfigurationError, HubStopped, MalformedMessage
from ...message import Message
from ..base import Inbox, Subscription
from ..dedupe import Dedupe
from ..limits import LimitSpec
from . import scripts
from .by_slot import by_slot, chunks_by_slot
from .common import RedisBusBase
from .connection import refusals_as_bus_errors
from .durable import Confirm
from .entries import (
    PUBLISH_BATCH,
    Requeued,
)
from .keys import DEFAULT_PARTITIONS, partition_count
from .layout import ClusterKeys
from .letters import Letter, settle, settle_on
from .limits import RedisLimiter, give_back_slots, limiter_of, renew_slots
from .once import batches, publish_many_once, publish_many_script, publish_once, trim_guard
from .options import RedisOptions
from .ordered import OrderedSubscription
from .reader import Reader
from .replication import durably
from .results import RedisStatuses
from .scripts_slots import register
from .slots import key_slot
from .subscription import StreamSubscription
from .watch import LazyWatch
from .wire import Command

log = logging.getLogger("actionhub.redis")

#: Seconds after which the trim script removes a consumer that holds nothing and has not read.
FORGET_CONSUMERS_AFTER = 3600.0

#: (stream, group) pairs per call of the script that looks for abandoned entries.
SCAN_BATCH = 500

#: Streams per round trip of the trim (each a script that reads the stream's groups and consumers).
TRIM_BATCH = 100


class RedisStreamsBus(RedisBusBase):
    """At-least-once transport on Redis Streams and consumer groups."""

    durable = True
    statuses_before_acks = True

    def __init__(self, url: str, redis_url: str, options: RedisOptions, *, client: Any = None) -> None:
        super().__init__(url, redis_url, options, client=client)
        self._renew = register(self.client, self.keys, scripts.RENEW)
        self._release = register(self.client, self.keys, scripts.RELEASE_UNSTARTED)
        self._trim = register(self.client, self.keys, scripts.TRIM)
        self._create_group = register(self.client, self.keys, scripts.CREATE_GROUP)
        self._abandoned = register(self.client, self.keys, scripts.ABANDONED)
        self._backlog = register(self.client, self.keys, scripts.BACKLOG)
        self._publish_many_once = self.client.register_script(publish_many_script(self.keys))
        self._subscriptions: list[StreamSubscription] = []
        self._watches: list[LazyWatch] = []
        self.reader = Reader(self)
        self._acks_due = trio.Event()
        self._flushing = trio.Lock()
        self._partitions: dict[str, int] = {}  # topic -> its partition count, once known (it never changes)

    async def partitions_of(self, topic: str, *, default: int | None = None) -> int | None:
        """How many partitions ``topic`` has (kept at ``<prefix>partitions:<topic>``); None if
        it has none yet, unless ``default`` is given: then that many, if nobody set it first."""
        known = self._partitions.get(topic)
        if known is not None:
            return known
        key = self.keys.partitions(topic)
        commands: list[Command] = (
            [("MGET", key)] if default is None else [("SET", key, default, "NX"), ("MGET", key)]
        )
        *_, (raw,) = await self.execute(commands, what=f"read the partition count of {topic}")
        count = partition_count(key, raw)
        if count is not None:
            self._partitions[topic] = count
        return count

    async def topic_partitions(self, topic: str) -> int:
        return await self.partitions_of(topic) or 0

    async def _partition_stream(self, topic: str, key: str) -> str:
        """The stream of ``key``'s partition of ``topic``."""
        partitions = await self.partitions_of(topic, default=DEFAULT_PARTITIONS)
        assert partitions is not None
        return self.keys.keyed_stream(topic, key, partitions)

    async def _stream_of(self, message: Message) -> str:
        """Where ``message`` goes: its key's partition stream, or the topic's stream if unkeyed."""
        if message.key is None:
            return self.keys.stream(message.topic)
        return await self._partition_stream(message.topic, message.key)

    # ------------------------------------------------------------------ publishing

    @refusals_as_bus_errors("publish")
    async def publish(
        self,
        message: Message,
        *,
        delay: float | None = None,
        dedupe: Dedupe | None = None,
        durable: int | None = None,
    ) -> str:
        raw = self.encode(message)
        key, topic = message.key, message.topic  # unkeyed: no coroutine on the per-message path
        stream = self.keys.stream(topic) if key is None else await self._partition_stream(topic, key)
        kept = self.kept_topics.kept(topic)
        if kept is None:
            kept = await self.keeps_results(topic)
        build = partial(
            publish_once, self.keys, target=stream, topic=topic, message_id=message.id, raw=raw,
            kept=kept, delay=delay, dedupe=dedupe,
        )  # fmt: skip
        confirm = self.confirm(topic, durable, target=stream)
        # the script from the first attempt (once.py); in the cluster layout a kept publish
        # writes its pending status after (`write_pending`), so it needs no script for that
        if delay or dedupe is not None or (kept and self.writes_status):
            first = await self.send_once(self._publish_once, build, what="publish", confirm=confirm)
            first_id = first.decode() if isinstance(first, bytes) else str(first)
            if kept and first_id == message.id:  # a duplicate (dedupe) has the first's record
                await self.write_pending(topic, [first_id])
            return first_id
        # a bare XADD; a retry (the reply may have been lost) is the script, written only if absent
        deadline = trio.current_time() + self.options.publish_timeout
        again = partial(self.resend, self._publish_once, build, confirm=confirm)
        xadd: Command = ("XADD", stream, "*", "message", raw)
        if confirm is not None:  # an XADD always writes: no mark
            await self.call_async(
                partial(durably, self, [xadd], Confirm(confirm.replicas), what="publish"),
                what="publish",
                deadline=deadline,
                again=again,
            )
            if kept:
                await self.write_pending(topic, [message.id])
            return message.id
        wire = self.wire
        if wire is not None:
            await self.call_async(
                partial(wire.execute, xadd),
                what="publish",
                deadline=deadline,
                again=again,
            )
        else:
            await self.call(
                lambda: [self.client.xadd(stream, {"message": raw})],
                what="publish",
                deadline=deadline,
                again=again,
            )
        if kept:
            await self.write_pending(topic, [message.id])
        return message.id

    @refusals_as_bus_errors("publish")
    async def publish_many(self, messages: Sequence[Message], *, durable: int | None = None) -> list[str]:
        writes = [(await self._stream_of(m), m.id, self.encode(m)) for m in messages]
        # the cluster layout: batches of one topic and slot (each all of it or none)
        slot = None if self.writes_status else key_slot
        for topic, batch in batches(messages, writes, PUBLISH_BATCH, slot):
            # one script per batch: all of it or none; a retry (the reply may have been lost)
            # writes nothing if the batch's first message is in its stream (once.py)
            kept = await self.keeps_results(topic)
            build = partial(publish_many_once, self.keys, topic=topic, writes=batch, kept=kept)
            confirm = self.confirm(topic, durable, target=batch[0][0])
            await self.send_once(self._publish_many_once, build, what="publish", confirm=confirm)
            if kept:
                await self.write_pending(topic, [message_id for _, message_id, _ in batch])
        return [message.id for message in messages]

    async def history(
        self, topic: str, *, first: str = "-", last: str = "+", count: int = 1000
    ) -> list[tuple[str, Message]]:
        partitions = await self.partitions_of(topic) or 0
        streams = [self.keys.stream(topic), *(self.keys.partition(topic, p) for p in range(partitions))]

        def read(start: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
            with self.client.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xrange(stream, start, last, count=count)
                ranges = pipe.execute()
            # one timeline: entry ids are the times (ms) the entries were added; entries of
            # different partitions added within one millisecond come in no particular order
            return heapq.nsmallest(count, itertools.chain(*ranges), key=lambda e: _id_order(e[0]))

        found: list[tuple[str, Message]] = []
        start = first
        while len(found) < count:  # retries and malformed entries are read past, not counted
            entries = await self.call(partial(read, start), what=f"read the history of {topic}")
            for entry_id, fields in entries:
                raw = fields.get(b"message")
                if raw is None or b"group" in fields:  # not a message, or a retry meant for one group
                    continue
                entry = entry_id.decode()
                try:
                    found.append((entry, self.decode_message(topic, raw, entry)))
                except MalformedMessage:
                    continue  # the consumers dead-lettered it already
            if len(entries) < count:
                break  # the range is read to its end
            start = "(" + entries[-1][0].decode()
        return found[:count]

    async def requeue_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        await self.partitions_of(topic)  # known (cached) before `_requeue` runs in its thread
        return await super().requeue_dead_letters(topic, ids)

    def _requeue(self, topic: str, again: Requeued, entry_id: bytes) -> list[Command]:
        stream = self.keys.stream(topic)
        partitions = self._partitions.get(topic)
        if again.key is not None and partitions:  # back to its key's partition
            stream = self.keys.keyed_stream(topic, again.key, partitions)
        flat = [part for pair in again.fields.items() for part in pair]
        return [("XADD", stream, "*", *flat), ("XDEL", self.keys.dead(topic), entry_id)]

    # ------------------------------------------------------------------ consuming

    keeps_history = True

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
        if self._nursery is None:
            raise HubStopped("redis bus is not open")
        subscription: StreamSubscription
        if ordered:
            count = await self.partitions_of(topic, default=partitions or DEFAULT_PARTITIONS)
            if partitions is not None and count != partitions:
                raise ConfigurationError(
                    f"topic {topic!r} has {count} partitions ({self.keys.partitions(topic)}, set by its "
                    f"first ordered group or keyed publisher), not the {partitions} this group asks for"
                )
            assert count is not None
            subscription = OrderedSubscription(self, topic, group, inbox, count, earliest=earliest)
        else:
            subscription = StreamSubscription(self, topic, group, inbox, earliest=earliest)
        await subscription.start(self._nursery)
        self._subscriptions.append(subscription)
        return subscription

    async def watch(
        self, topic: str, group: str, on_message: Callable[[], Awaitable[None]], *, earliest: bool = False
    ) -> LazyWatch:
        if self._nursery is None:
            raise HubStopped("redis bus is not open")
        watch = LazyWatch(self, topic, group, on_message, earliest=earliest)
        await watch.start()
        return watch

    async def _start_background(self, nursery: trio.Nursery) -> None:
        await super()._start_background(nursery)
        nursery.start_soon(self.reader.run)
        nursery.start_soon(self.keep_running, "acknowledging", self._ack_when_due)
        nursery.start_soon(self.keep_running, "looking after the groups", self._look_after)
        nursery.start_soon(self.keep_running, "renewing leases", self._renew_leases)
        nursery.start_soon(self.keep_running, "trimming", self._trim_streams)

    async def _before_close(self) -> None:
        await self.flush_acks()
        await give_back_slots(self)

    def wake_acker(self) -> None:
        self._acks_due.set()

    async def _ack_when_due(self) -> None:
        await self._acks_due.wait()
        self._acks_due = trio.Event()
        await self.flush_acks()

    async def flush_acks(self) -> None:
        """One round trip for every ack (and malformed entry's dead letter) since the last one.
        Returns once every ack owed when it was called is in Redis (a batch already on its way
        included: a hand-over releases a partition only after that)."""
        async with self._flushing:
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        batch = [(s, *s.take_settled()) for s in self._subscriptions if s.acks or s.letters]
        if not batch:
            return
        statuses: RedisStatuses | None = self.__dict__.get("_statuses")
        if statuses is not None:  # a group keeps results: done records before the acks
            try:
                await statuses.flush()
            except BaseException:
                self._owe(batch)
                raise

        def ack() -> None:
            # a transaction only with letters: each must be acked if, and only if, it is written
            with self.client.pipeline(transaction=any(letters for _, _, letters in batch)) as pipe:
                for subscription, acks, letters in batch:
                    subscription.add_to(pipe, acks, letters)
                pipe.execute()

        wire = self.wire
        try:
            if isinstance(self.keys, ClusterKeys) and any(letters for _, _, letters in batch):
                # a transaction touches one slot: letters with their acks where they share it
                plans = [s.settlement(acks, letters) for s, acks, letters in batch]
                if wire is not None:
                    await settle_on(self, plans, what="ack")
                else:
                    await self.call(partial(settle, self.client, plans), what="ack")
            elif wire is not None and not any(letters for _, _, letters in batch):
                commands: list[Command] = [
                    ("XACK", stream, s.group, *ids) for s, acks, _ in batch for stream, ids in acks.items()
                ]
                await self.call_async(partial(wire.execute, *commands), what="ack")
            else:
                await self.call(ack, what="ack")
        except BaseException:  # say, an OOM reply: keep what is owed for the next round
            self._owe(batch)
            raise

    def _owe(self, batch: list[tuple[StreamSubscription, dict[str, list[bytes]], list[Letter]]]) -> None:
        """Take back what a failed round could not send; the acker goes again (after its pause)
        even if nothing new is acked meanwhile."""
        for subscription, acks, letters in batch:
            subscription.owe(acks, letters)
        self._acks_due.set()

    async def _look_after(self) -> None:
        """Once per claim interval, for every group of the hub at once: find entries abandoned by
        dead hubs, and the partition streams of topics that got some. A dead hub's messages
        come back within visibility_timeout + this interval."""
        subscriptions = list(self._subscriptions)
        pairs = [(s, stream) for s in subscriptions for stream in s.reclaimable()]
        # a script touches one slot in the cluster layout: chunks per slot there
        chunks = chunks_by_slot(self.keys, pairs, lambda pair: pair[1], SCAN_BATCH)
        idle = int(self.options.visibility_timeout * 1000)
        scans = [
            (self._abandoned, [stream for _, stream in chunk], [idle, *(s.group for s, _ in chunk)])
            for chunk in chunks
        ]
        following = [s for s in subscriptions if s.follows_partitions()]
        watching = [w for w in self._watches if w.follows_partitions()]
        topics = sorted({s.topic for s in following} | {w.topic for w in watching})
        keys = [self.keys.partitions(topic) for topic in topics]
        gets = by_slot(self.keys, keys, lambda key: key) if keys else []  # one MGET per slot
        replies = await self.run_scripts(
            scans, also=[("MGET", *group) for group in gets], what="look after the groups"
        )
        for chunk, positions in zip(chunks, replies, strict=False):
            for position in positions:
                chunk[int(position) - 1][0].reclaim_soon()
        if keys:
            counts = dict(
                zip(
                    [k for group in gets for k in group],
                    [raw for r in replies[len(scans) :] for raw in r],
                    strict=True,
                )
            )
            for topic, key in zip(topics, keys, strict=True):
                raw = counts[key]
                count = partition_count(key, raw)
                if count is not None:
                    self._partitions[topic] = count
            for subscription in following:
                if subscription.topic in self._partitions:
                    subscription.follow_partitions_soon()
            for watch in watching:
                if watch.topic in self._partitions:
                    watch.follow_partitions_soon()
        await trio.sleep(min(self.options.visibility_timeout / 2, 1.0))

    async def _renew_leases(self) -> None:
        """Every visibility_timeout / 3: renew the lease of every entry the hub holds, for all of
        its groups in one round trip (a script per stream and group)."""
        await trio.sleep(self.options.visibility_timeout / 3)
        held = [
            (s, stream, list(ids))
            for s in list(self._subscriptions)
            for stream, ids in s.in_hand.items()
            if ids
        ]
        for start in range(0, len(held), SCAN_BATCH):
            chunk = held[start : start + SCAN_BATCH]
            calls = [(self._renew, [stream], [s.group, self.consumer, *ids]) for s, stream, ids in chunk]
            for (subscription, stream, _), lost in zip(
                chunk, await self.run_scripts(calls, what="renew leases"), strict=True
            ):
                if lost:
                    log.warning(
                        "%s/%s: the lease of %d message(s) was taken by another hub (this hub stalled "
                        "longer than visibility_timeout); they may run twice",
                        stream,
                        subscription.group,
                        len(lost),
                    )
        await renew_slots(self)  # the group's concurrency slots lapse with the hub's leases

    async def _trim_streams(self) -> None:
        await trio.sleep(self.options.trim_interval)
        await self.trim(sorted({stream for s in self._subscriptions for stream in s.reading}))

    async def trim(self, streams: Sequence[str]) -> int:
        """Trim what no group needs any more from ``streams``, and forget long-gone consumers
        (a script per stream, in few round trips); returns the entries removed."""
        removed = 0
        forget_after = int(FORGET_CONSUMERS_AFTER * 1000)
        guard = trim_guard(self.options.publish_timeout)
        for start in range(0, len(streams), TRIM_BATCH):
            chunk = streams[start : start + TRIM_BATCH]
            calls = [(self._trim, [stream], [forget_after, guard]) for stream in chunk]
            removed += sum(int(n) for n in await self.run_scripts(calls, what="trim"))
        return removed

    def limiter(self, topic: str, group: str, spec: LimitSpec) -> RedisLimiter:
        """Limits kept in Redis for every hub of the group (bus/redis/limits.py)."""
        return limiter_of(self, topic, group, spec)

    def delayed_in_use(self) -> set[str]:
        return {self.keys.delayed_of(stream) for s in self._subscriptions for stream in s.reading}

    def _forget(self, subscription: StreamSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)


def _id_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
