"""``redis://``: Redis Streams with consumer groups, at-least-once.

* One stream per topic (``<prefix><topic>``), one consumer group per action (or its ``group=``),
  created at id 0 so that what was published before the first hub started is not missed.
  Keyed messages go to the topic's partition streams (``<prefix><topic>:p<n>``, see
  docs/ordering.md); a group reads them all with its topic's stream, an ordered group only those
  whose lease it holds.
* Reads are batched: one ``XREADGROUP COUNT <credit / streams> BLOCK`` over every stream the group
  reads, about as many entries as the group has room for. Acks are batched too: one pipelined
  ``XACK`` per stream for whatever finished meanwhile. Nothing is acked that did not finish.
* Leases: an entry read by a hub stays in its pending list. A live hub renews the entries it holds
  every ``visibility_timeout / 3`` (XCLAIM JUSTID, checked in a script so a lease another hub
  has taken is never stolen back); an entry idle for ``visibility_timeout`` belongs to a dead hub
  and is reclaimed (XPENDING IDLE, then XCLAIM) by a live one, which looks at least once a second.
  Redis counts deliveries, and each delivery beyond the first is one more attempt, so a crash loop
  ends in the dead letters.
* A retry is scheduled in the delayed set and acked in one script; its entry, when due, carries a
  ``group`` field so that only the group that failed it runs it again (other groups skip it).
* Trimming: every ``trim_interval`` a script trims each consumed stream below the oldest entry that
  any of its groups has not yet delivered or acked (``XTRIM MINID ~``). An undelivered or unacked
  entry is never trimmed; a stream with a group nobody consumes any more keeps growing until that
  group is destroyed (``XGROUP DESTROY``). The same script removes consumers that hold nothing and
  have read nothing for an hour: what killed hubs leave behind in ``XINFO CONSUMERS``.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, cast

import attrs
import orjson
import trio
from redis.exceptions import RedisError, ResponseError

from ..errors import BusError, ConfigurationError, HubStopped, MalformedMessage
from ..message import Message
from . import protocol
from ._partitions import PartitionLeases, assign
from ._redis import RedisBusBase, RedisOptions, RedisProgress, is_nogroup, text
from ._wire import Command
from .base import Delivery, Inbox, Subscription
from .protocol import (
    DEFAULT_PARTITIONS,
    PUBLISH_BATCH,
    Requeued,
    dead_letter_fields,
    delayed_member,
    partition_count,
)

log = logging.getLogger("actionhub.redis")

#: Pending entries per round trip when a hub takes a partition over.
TAKE_OVER_BATCH = 1000

#: Seconds after which the trim script removes a consumer that holds nothing and has not read.
FORGET_CONSUMERS_AFTER = 3600.0


class RedisStreamsBus(RedisBusBase):
    """At-least-once transport on Redis Streams and consumer groups."""

    durable = True

    def __init__(self, url: str, redis_url: str, options: RedisOptions, *, client: Any = None) -> None:
        super().__init__(url, redis_url, options, client=client)
        self._renew = self.client.register_script(protocol.RENEW)
        self._release = self.client.register_script(protocol.RELEASE_UNSTARTED)
        self._trim = self.client.register_script(protocol.TRIM)
        self._create_group = self.client.register_script(protocol.CREATE_GROUP)
        self._subscriptions: list[_StreamSubscription] = []
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

        def read() -> Any:
            if default is not None:
                self.client.set(key, default, nx=True)
            return self.client.mget([key])[0]

        raw = await self.call(read, what=f"read the partition count of {topic}")
        count = partition_count(key, raw)
        if count is not None:
            self._partitions[topic] = count
        return count

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

    async def publish(self, message: Message, *, delay: float | None = None) -> str:
        raw = self.encode(message)
        key = message.key  # unkeyed: no coroutine on the per-message path
        stream = (
            self.keys.stream(message.topic)
            if key is None
            else await self._partition_stream(message.topic, key)
        )
        if delay:
            await self.schedule("x", stream, "", raw, delay)
        else:
            deadline = trio.current_time() + self.options.publish_timeout
            wire = self.wire
            if wire is not None:
                await self.call_async(
                    partial(wire.execute, ("XADD", stream, "*", "message", raw)),
                    what="publish",
                    deadline=deadline,
                )
            else:
                await self.call(
                    lambda: self.client.xadd(stream, {"message": raw}), what="publish", deadline=deadline
                )
        return message.id

    async def publish_many(self, messages: Sequence[Message]) -> list[str]:
        entries = [(await self._stream_of(message), self.encode(message)) for message in messages]
        for start in range(0, len(entries), PUBLISH_BATCH):
            chunk = entries[start : start + PUBLISH_BATCH]

            def add(chunk: list[tuple[str, bytes]] = chunk) -> None:
                # a transaction: a retry after a lost connection cannot write half a batch twice
                with self.client.pipeline(transaction=True) as pipe:
                    for stream, raw in chunk:
                        pipe.xadd(stream, {"message": raw})
                    pipe.execute()

            await self.call(add, what="publish", deadline=trio.current_time() + self.options.publish_timeout)
        return [message.id for message in messages]

    async def history(
        self, topic: str, *, first: str = "-", last: str = "+", count: int = 1000
    ) -> list[tuple[str, Message]]:
        partitions = await self.partitions_of(topic) or 0
        streams = [self.keys.stream(topic), *(self.keys.partition(topic, p) for p in range(partitions))]

        def read() -> list[tuple[bytes, dict[bytes, bytes]]]:
            with self.client.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xrange(stream, first, last, count=count)
                ranges = pipe.execute()
            # one timeline: entry ids are the times (ms) the entries were added; entries of
            # different partitions added within one millisecond come in no particular order
            return heapq.nsmallest(count, itertools.chain(*ranges), key=lambda e: _id_order(e[0]))

        found = []
        for entry_id, fields in await self.call(read, what=f"read the history of {topic}"):
            raw = fields.get(b"message")
            if raw is None or b"group" in fields:  # not a message, or a retry meant for one group
                continue
            entry = entry_id.decode()
            try:
                found.append((entry, self.decode_message(topic, raw, entry)))
            except MalformedMessage:
                continue  # the consumers dead-lettered it already
        return found

    async def requeue_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        await self.partitions_of(topic)  # known (cached) before `_requeue` runs in its thread
        return await super().requeue_dead_letters(topic, ids)

    def _requeue(self, topic: str, again: Requeued, entry_id: bytes) -> None:
        stream = self.keys.stream(topic)
        partitions = self._partitions.get(topic)
        if again.key is not None and partitions:  # back to its key's partition
            stream = self.keys.keyed_stream(topic, again.key, partitions)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, again.fields)
            pipe.xdel(self.keys.dead(topic), entry_id)
            pipe.execute()

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
        subscription: _StreamSubscription
        if ordered:
            count = await self.partitions_of(topic, default=partitions or DEFAULT_PARTITIONS)
            if partitions is not None and count != partitions:
                raise ConfigurationError(
                    f"topic {topic!r} has {count} partitions ({self.keys.partitions(topic)}, set by its "
                    f"first ordered group or keyed publisher), not the {partitions} this group asks for"
                )
            assert count is not None
            subscription = _OrderedSubscription(self, topic, group, inbox, count, earliest=earliest)
        else:
            subscription = _StreamSubscription(self, topic, group, inbox, earliest=earliest)
        await subscription.start(self._nursery)
        self._subscriptions.append(subscription)
        return subscription

    async def _start_background(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.keep_running, "acknowledging", self._ack_when_due)
        nursery.start_soon(self.keep_running, "renewing leases", self._renew_leases)
        nursery.start_soon(self.keep_running, "trimming", self._trim_streams)

    async def _before_close(self) -> None:
        await self.flush_acks()

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

        def ack() -> None:
            # a transaction only with letters: each must be acked if, and only if, it is written
            with self.client.pipeline(transaction=any(letters for _, _, letters in batch)) as pipe:
                for subscription, acks, letters in batch:
                    subscription.add_to(pipe, acks, letters)
                pipe.execute()

        wire = self.wire
        try:
            if wire is not None and not any(letters for _, _, letters in batch):
                commands: list[Command] = [
                    ("XACK", stream, s.group, *ids) for s, acks, _ in batch for stream, ids in acks.items()
                ]
                await self.call_async(partial(wire.execute, *commands), what="ack")
            else:
                await self.call(ack, what="ack")
        except BaseException:  # say, an OOM reply: keep what is owed for the next round
            for subscription, acks, letters in batch:
                subscription.owe(acks, letters)
            raise

    async def _renew_leases(self) -> None:
        await trio.sleep(self.options.visibility_timeout / 3)
        for subscription in list(self._subscriptions):
            for stream, held in list(subscription.in_hand.items()):
                if not held:
                    continue
                lost = await self.call(
                    partial(self._renew, keys=[stream], args=[subscription.group, self.consumer, *held]),
                    what="renew leases",
                )
                if lost:
                    log.warning(
                        "%s/%s: the lease of %d message(s) was taken by another hub (this hub stalled "
                        "longer than visibility_timeout); they may run twice",
                        stream,
                        subscription.group,
                        len(lost),
                    )

    async def _trim_streams(self) -> None:
        await trio.sleep(self.options.trim_interval)
        for stream in {stream for s in self._subscriptions for stream in s.reading}:
            await self.call(partial(self._trim_stream, stream), what="trim")

    def _trim_stream(self, stream: str) -> int:
        """Trim what no group needs any more and forget long-gone consumers; returns entries removed."""
        return int(self._trim(keys=[stream], args=[int(FORGET_CONSUMERS_AFTER * 1000)]))

    def _forget(self, subscription: _StreamSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)


def _id_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


@attrs.frozen
class _Letter:
    """A stream entry on its way to the dead letters."""

    stream: str
    entry_id: bytes
    raw: bytes
    reason: str
    attempts: int = 1
    error: str | None = None
    traceback: str | None = None


Entries = list[tuple[bytes, dict[bytes, bytes]]]


class _StreamSubscription(RedisProgress, Subscription):
    """One consumer group of a topic, feeding one inbox: the topic's stream, and the streams of
    its partitions once it has some (keyed messages are there), all read in one XREADGROUP."""

    bus: RedisStreamsBus

    def __init__(self, bus: RedisStreamsBus, topic: str, group: str, inbox: Inbox, *, earliest: bool) -> None:
        self.bus = bus
        self.earliest = earliest
        self.topic = topic
        self.group = group
        self.inbox = inbox
        self.stream = bus.keys.stream(topic)
        self.reading: list[str] = [self.stream]  # the streams the read loop reads
        self.in_hand: dict[str, set[bytes]] = {}  # per stream, ids read and not settled: leases to renew
        self.acks: dict[str, list[bytes]] = {}
        self.letters: list[_Letter] = []  # malformed entries for the acker to dead-letter
        self.partitions: int | None = None  # the topic's partition count, once it has some
        self._group_bytes = group.encode()
        self._groups_of: dict[str, set[bytes]] = {}  # per stream, its groups as last seen: retries' targets
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._closed = False
        self._reclaimed = 0  # in the current run of reclaims, for one log line at its end
        self._settled = trio.lowlevel.ParkingLot()  # woken when a stream's in_hand becomes empty
        self._read_ended = trio.lowlevel.ParkingLot()  # woken when a read returns
        self.read_in_progress: tuple[str, ...] = ()  # the streams of the read under way
        self.batch = max(1, inbox.free_credit() // 2)
        self._wire = bus.new_wire()  # blocking reads hold a connection: one of its own

    async def start(self, nursery: trio.Nursery) -> None:
        """Create the consumer group on each stream it reads, then start reading."""
        await self.ensure_group(self.stream)
        await self._follow_partitions(from_start=False)
        await nursery.start(self.read_loop)

    async def _follow_partitions(self, *, from_start: bool) -> None:
        """An unordered group reads every partition stream of its topic too, once there are some
        (from their start if they appeared after the group did: nothing published there is missed)."""
        if self.partitions is not None:
            return
        self.partitions = await self.bus.partitions_of(self.topic)
        for partition in range(self.partitions or 0):
            stream = self.bus.keys.partition(self.topic, partition)
            await self.ensure_group(stream, from_start=from_start)
            self.reading.append(stream)

    def take_settled(self) -> tuple[dict[str, list[bytes]], list[_Letter]]:
        """The acks and dead letters owed to Redis, handed over to be sent."""
        taken = self.acks, self.letters
        self.acks, self.letters = {}, []
        return taken

    def owe(self, acks: dict[str, list[bytes]], letters: list[_Letter]) -> None:
        """Take back acks and letters that could not be sent, ahead of newer ones."""
        for stream, ids in acks.items():
            self.acks.setdefault(stream, [])[:0] = ids
        self.letters[:0] = letters

    async def ensure_group(self, stream: str, *, from_start: bool = False) -> None:
        """Create the consumer group on ``stream`` if it does not exist (see _CREATE_GROUP for
        where it starts; ``from_start``: at the stream's start whatever ``start`` says)."""
        earliest = int(self.earliest or from_start)
        created, skipped = await self.bus.call(
            lambda: self.bus._create_group(keys=[stream], args=[self.group, earliest]),
            what=f"create group {self.group} on {stream}",
        )
        if created and skipped:
            log.info(
                "%s: new group %s starts after the %d entries already there (start='earliest' reads them)",
                stream,
                self.group,
                skipped,
            )

    # ------------------------------------------------------------------ reading

    def reclaimable(self) -> list[str]:
        """The streams whose entries abandoned by dead hubs this subscription reclaims."""
        return self.reading

    def accepts(self, stream: str) -> bool:
        """Whether entries just read from ``stream`` are still this subscription's to run."""
        return True

    async def _give_back(self, stream: str, ids: list[bytes]) -> None:
        """Make entries this subscription read but must not run claimable at once."""
        bus = self.bus
        idle = int(bus.options.visibility_timeout * 1000) * 2
        await bus.call(
            lambda: bus._release(keys=[stream], args=[self.group, bus.consumer, idle, *ids]),
            what="give back messages",
        )

    async def read_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        options = self.bus.options
        next_claim = trio.current_time()  # at start: pick up what crashed hubs left at once
        # a dead hub's messages come back within visibility_timeout + claim_interval
        claim_interval = min(options.visibility_timeout / 2, 1.0)
        try:
            with self._scope:
                while True:
                    try:
                        # half the buffer at least: fewer, fuller batches; the workers still have work
                        credit = await self.inbox.wait_for_credit(self.batch)
                    except HubStopped:
                        return
                    try:
                        if trio.current_time() >= next_claim:
                            if await self._reclaim(credit):
                                continue  # there may be more: reclaim again before reading
                            await self._follow_partitions(from_start=True)
                            next_claim = trio.current_time() + claim_interval
                        await self._read(credit)
                    except ResponseError as exc:
                        if is_nogroup(exc):
                            log.warning(
                                "%s: group %s is gone (Redis lost it?); recreating it",
                                self.topic,
                                self.group,
                            )
                            # at the start: at-least-once would rather run a message twice
                            # than skip what was published since the group vanished
                            for stream in list(self.reading):
                                await self.ensure_group(stream, from_start=True)
                        else:  # say, OOM: keep the group alive and try again later
                            log.error("%s: reading failed: %r; retrying in a second", self.topic, exc)
                            await trio.sleep(1)
                    except HubStopped:
                        return
        finally:
            self.read_in_progress = ()
            self._read_ended.unpark_all()
            self._done.set()

    async def _read(self, credit: int) -> None:
        client, bus = self.bus.client, self.bus
        block_ms = int(bus.options.block * 1000)
        streams = tuple(self.reading)
        count = -(-credit // len(streams))  # at most about `credit` in all, whichever streams have them
        what = f"read {self.stream}"
        self.read_in_progress = streams
        try:
            if self._wire is not None:
                command = ("XREADGROUP", "GROUP", self.group, bus.consumer, "COUNT", count, "BLOCK", block_ms)
                (reply,) = await bus.call_async(
                    partial(self._wire.execute, (*command, "STREAMS", *streams, *(">",) * len(streams))),
                    what=what,
                )
            else:
                reply = await bus.call(
                    lambda: client.xreadgroup(
                        self.group, bus.consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
                    ),
                    what=what,
                )
            for stream, entries in _streams_of(reply):
                if self.accepts(stream):
                    await self._deliver(stream, entries, None)
                else:
                    await self._give_back(stream, [entry_id for entry_id, _ in entries])
        finally:
            self.read_in_progress = ()
            self._read_ended.unpark_all()

    async def _reclaim(self, credit: int) -> bool:
        """Take over entries idle past the visibility timeout (their hub died). True if any.

        An entry on its first delivery was in a hub that died once: up to ``credit`` of them are
        taken as one batch, so the work of a crashed hub comes back at full speed. An entry
        delivered before was in a hub that died at least twice: it may be what kills them, so it
        runs in quarantine, alone, once what this group holds is settled and acked, and nothing
        else is read until it is settled. A message that kills every hub thus drags its
        bystanders into one extra delivery at most, and ends in the dead letters by itself."""
        bus = self.bus
        options = bus.options
        if trio.current_time() < bus.reachable_since + options.visibility_timeout:
            return False  # after an outage, give every hub time to reconnect and renew its leases
        streams = tuple(self.reclaimable())
        self.read_in_progress = streams  # a hand-over waits for it, as for a read
        try:
            return await self._reclaim_from(streams, credit)
        finally:
            self.read_in_progress = ()
            self._read_ended.unpark_all()

    async def _reclaim_from(self, streams: tuple[str, ...], credit: int) -> bool:
        bus = self.bus
        min_idle = int(bus.options.visibility_timeout * 1000)
        for stream in streams:
            in_hand = self.in_hand.get(stream, set())

            def abandoned(stream: str = stream, in_hand: set[bytes] = in_hand) -> list[dict[str, Any]]:
                idle = bus.client.xpending_range(stream, self.group, "-", "+", credit, idle=min_idle)
                # an entry of this hub's own whose renewal is late is still running here
                return [entry for entry in idle if entry["message_id"] not in in_hand]

            idle = await bus.call(abandoned, what=f"look for abandoned messages in {stream}")
            if idle:
                return await self._take_abandoned(stream, idle, min_idle)
        if self._reclaimed:
            log.warning(
                "%s/%s: reclaimed %d message(s) left by a dead or stalled hub",
                self.topic,
                self.group,
                self._reclaimed,
            )
            self._reclaimed = 0
        return False

    async def _take_abandoned(self, stream: str, idle: list[dict[str, Any]], min_idle: int) -> bool:
        bus = self.bus
        fresh = [entry["message_id"] for entry in idle if entry["times_delivered"] <= 1]
        suspect = [entry["message_id"] for entry in idle if entry["times_delivered"] > 1][:1]
        ids = fresh or suspect
        # XCLAIM with the idle bound: an entry renewed or claimed by another hub meanwhile stays there
        claimed = await bus.call(
            lambda: bus.client.xclaim(stream, self.group, bus.consumer, min_idle, ids),
            what=f"reclaim {stream}",
        )
        entries = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if not entries:  # all taken by other hubs meanwhile
            return False
        if not self.accepts(stream):  # the partition's lease was lost meanwhile
            await self._give_back(stream, [entry_id for entry_id, _ in entries])
            return False
        self._reclaimed += len(entries)
        deliveries = {entry["message_id"]: entry["times_delivered"] + 1 for entry in idle}
        if fresh:
            await self._deliver(stream, entries, deliveries)
            return True
        for entry_id, _ in entries:
            log.info(
                "%s/%s: reclaimed %s in quarantine (delivery %d)",
                stream,
                self.group,
                text(entry_id),
                deliveries[entry_id],
            )
        await self._settle(None)
        await self._deliver(stream, entries, deliveries)
        await self._settle(None)
        return True

    async def _settle(self, stream: str | None) -> None:
        """Wait until every entry this subscription holds (of ``stream``, or of every stream) is
        settled, and its acks are sent."""
        while any(self.in_hand.get(stream, ())) if stream else any(self.in_hand.values()):
            await self._settled.park()
        await self.bus.flush_acks()

    async def _deliver(self, stream: str, entries: Entries, counts: dict[bytes, int] | None) -> None:
        malformed: list[tuple[bytes, dict[bytes, bytes], str]] = []
        groups = self._groups_of.get(stream, {self._group_bytes})
        groups_read = False
        in_hand = self.in_hand.setdefault(stream, set())
        for index, (entry_id, fields) in enumerate(entries):
            target = fields.get(b"group")
            if target is not None and target != self._group_bytes:
                if target not in groups and not groups_read:  # a group new to us?
                    groups = await self.bus.call(
                        lambda: {g["name"] for g in self.bus.client.xinfo_groups(stream)},
                        what=f"groups of {stream}",
                    )
                    self._groups_of[stream] = groups
                    groups_read = True
                if target in groups:
                    self.acks.setdefault(stream, []).append(entry_id)  # a retry meant for another group
                    self.bus.wake_acker()
                else:  # no group would ever run it: say so instead of dropping it
                    name = target.decode(errors="replace")
                    malformed.append((entry_id, fields, f"entry is for group {name!r}, which {stream} lacks"))
                continue
            raw = fields.get(b"message")
            try:
                if raw is None:
                    raise MalformedMessage("stream entry has no 'message' field")
                message = self.bus.decode_message(self.topic, raw, entry_id.decode())
            except MalformedMessage as exc:
                malformed.append((entry_id, fields, str(exc)))
                continue
            deliveries = 1 if counts is None else counts.get(entry_id, 1)
            if deliveries > 1:
                message = attrs.evolve(message, attempt=message.attempt + deliveries - 1)
            in_hand.add(entry_id)
            try:
                self.inbox.put_nowait(Delivery(message, self, (stream, entry_id, raw)))
            except HubStopped:  # the group stands down or stops: what it read is not its to run
                in_hand.discard(entry_id)
                if malformed:
                    self._dead_letter_malformed(stream, malformed)
                await self._give_back(stream, [later for later, _ in entries[index:]])
                raise
        if malformed:
            self._dead_letter_malformed(stream, malformed)

    def _dead_letter_malformed(
        self, stream: str, malformed: list[tuple[bytes, dict[bytes, bytes], str]]
    ) -> None:
        """Hand malformed entries to the acker, which dead-letters and acks them with the next
        batch of acks (reading goes on meanwhile); say so in one line."""
        letters = self.letters
        for entry_id, fields, reason in malformed:
            self.inbox.note_malformed()
            raw = fields.get(b"message")
            if raw is None:
                raw = orjson.dumps(
                    {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
                )
            letters.append(_Letter(stream, entry_id, raw, f"malformed: {reason}"))
        entry_id, _, reason = malformed[0]
        log.warning(
            "%s: dead-lettering %d malformed entr%s (the first, %s: %s)",
            stream,
            len(malformed),
            "y" if len(malformed) == 1 else "ies",
            text(entry_id),
            reason,
        )
        self.bus.wake_acker()

    async def _move_to_dead(self, letters: list[_Letter]) -> None:
        """Add the letters to the dead letters and acknowledge their entries, in one transaction."""

        def move() -> None:
            with self.bus.client.pipeline(transaction=True) as pipe:
                self.add_to(pipe, {}, letters)
                pipe.execute()

        await self.bus.call(move, what="dead-letter")

    def add_to(self, pipe: Any, acks: dict[str, list[bytes]], letters: list[_Letter]) -> None:
        """Queue on ``pipe``: the letters into the dead letters, then the acks of the acked
        entries and of the letters' entries."""
        bus = self.bus
        owed = {stream: list(ids) for stream, ids in acks.items()}
        for letter in letters:
            fields = dead_letter_fields(
                letter.raw,
                topic=self.topic,
                group=self.group,
                reason=letter.reason,
                attempts=letter.attempts,
                error=letter.error,
                traceback=letter.traceback,
            )
            pipe.xadd(bus.keys.dead(self.topic), fields, maxlen=bus.options.max_dead_letters)
            owed.setdefault(letter.stream, []).append(letter.entry_id)
        for stream, ids in owed.items():
            pipe.xack(stream, self.group, *ids)

    # ------------------------------------------------------------------ settling

    def _forget_entry(self, stream: str, entry_id: bytes) -> None:
        held = self.in_hand.get(stream)
        if held is not None:
            held.discard(entry_id)
            if not held:
                self._settled.unpark_all()

    async def ack(self, delivery: Delivery) -> None:
        stream, entry_id, _ = _token(delivery)
        self._forget_entry(stream, entry_id)
        self.acks.setdefault(stream, []).append(entry_id)
        self.bus.wake_acker()

    async def retry(self, delivery: Delivery, *, delay: float, error: str | None) -> None:
        bus = self.bus
        stream, entry_id, _ = _token(delivery)
        entry = attrs.evolve(delivery.message, attempt=delivery.message.attempt + 1).encode()
        member = delayed_member("x", stream, self.group, entry)
        await bus.call(
            lambda: bus._schedule(
                keys=[bus.keys.delayed, stream], args=[delay, member, self.group, entry_id]
            ),
            what="schedule retry",
        )
        self._forget_entry(stream, entry_id)

    async def dead_letter(
        self, delivery: Delivery, *, reason: str, error: str | None = None, traceback: str | None = None
    ) -> None:
        stream, entry_id, raw = _token(delivery)
        letter = _Letter(stream, entry_id, raw, reason, delivery.message.attempt, error, traceback)
        await self._move_to_dead([letter])
        self._forget_entry(stream, entry_id)

    async def close(self) -> None:
        """Stop reading; flush acks; make what was read but never started claimable at once."""
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()
        await self._done.wait()
        if self._wire is not None:
            self._wire.close()  # a read still blocked in Redis ends with it, delivering nothing
        bus = self.bus
        await bus.flush_acks()
        bus._forget(self)
        for stream in list(self.in_hand):
            await self._release_unstarted(stream)

    async def _release_unstarted(self, stream: str) -> None:
        """Make what this subscription holds of ``stream`` claimable at once (it was never started)."""
        await self._give_back(stream, list(self.in_hand.pop(stream, ())))


class _Partition(enum.Enum):
    """Where this hub stands with one partition it holds the lease of."""

    JOINING = "joining"  # lease taken; the previous owner's unacked entries are being taken over
    OWNED = "owned"  # read
    LEAVING = "leaving"  # not read any more; what was read is being settled, then the lease released


class _OrderedSubscription(_StreamSubscription):
    """An ordered group (see docs/ordering.md): it reads its topic's stream (unkeyed messages)
    and the partition streams it holds the lease of, which are those rendezvous hashing gives it
    among the group's live hubs. Moves happen in `_rebalance`, one tick at a time."""

    def __init__(
        self, bus: RedisStreamsBus, topic: str, group: str, inbox: Inbox, partitions: int, *, earliest: bool
    ) -> None:
        super().__init__(bus, topic, group, inbox, earliest=earliest)
        self.partitions = partitions
        self.leases = PartitionLeases(bus.client, bus.keys, topic, group)
        self._streams = [bus.keys.partition(topic, p) for p in range(partitions)]
        self._partitions_by_stream = {stream: p for p, stream in enumerate(self._streams)}
        self.states: dict[int, _Partition] = {}
        self._lease_until = math.inf  # trio time at which the leases this hub holds lapse
        self._coordinator = trio.CancelScope()  # only if a tick will not end by itself
        self._coordinator_done = trio.Event()
        self._stop_coordinating = trio.Event()
        self._moving: set[int] = set()  # partitions a take-over or hand-over task is moving
        # claims and releases one at a time: a claim sent while a release is on its way could
        # reach Redis after it and take the lease back
        self._leases_in_use = trio.Lock()

    async def start(self, nursery: trio.Nursery) -> None:
        await self.ensure_group(self.stream)
        await nursery.start(self.read_loop)
        await nursery.start(self._run_coordinator)

    async def _run_coordinator(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with self._coordinator:
            await self._coordinate(task_status=task_status)

    async def _follow_partitions(self, *, from_start: bool) -> None:
        """Partitions come with their leases (see `_rebalance`), not all at once."""

    def reclaimable(self) -> list[str]:
        # a partition's unacked entries are taken over with its lease; what a hub that lost the
        # lease read afterwards is given back (or left by its death) and reclaimed here
        return [self.stream, *(self._streams[p] for p, s in self.states.items() if s is _Partition.OWNED)]

    def accepts(self, stream: str) -> bool:
        # a read under way when the lease was lost may still bring entries of the partition
        partition = self._partitions_by_stream.get(stream)
        return partition is None or partition in self.states

    def _set(self, partition: int, state: _Partition | None) -> None:
        if state is None:
            self.states.pop(partition, None)
        else:
            self.states[partition] = state
        self.partitions_owned = len(self.states)

    async def _coordinate(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until `close` asks to stop; a stop waits for the tick under way, so that no claim
        or heartbeat reaches Redis after the hub has left."""
        ttl = self.bus.options.visibility_timeout
        tick = min(1.0, ttl / 3)
        try:
            async with trio.open_nursery() as moves:
                task_status.started()
                while not self._stop_coordinating.is_set():
                    try:
                        await self._rebalance(moves, ttl, tick)
                    except BusError as error:  # Redis unreachable for as long as the leases last
                        await self._drop_all(f"their leases could not be renewed ({error})")
                    except RedisError as error:
                        log.error("%s/%s: rebalancing failed: %r", self.topic, self.group, error)
                    with trio.move_on_after(tick):
                        await self._stop_coordinating.wait()
                moves.cancel_scope.cancel()
        finally:
            self._coordinator_done.set()

    async def _rebalance(self, moves: trio.Nursery, ttl: float, tick: float) -> None:
        """Say this hub is live, renew the leases it holds, and move partitions: give up those
        the assignment gives another hub, take those it gives this one once their lease is free."""
        bus, me = self.bus, self.bus.consumer
        deadline = self._lease_until - tick if self.states else None  # not past the leases' end
        asked_at = trio.current_time()
        members = await bus.call(
            partial(self.leases.heartbeat, me, ttl), what="renew group membership", deadline=deadline
        )
        wanted = {p for p, member in assign(members, len(self._streams)).items() if member == me}
        async with self._leases_in_use:  # a hand-over's release must not cross this claim
            held = await bus.call(
                partial(self.leases.claim, sorted(wanted | set(self.states)), me, ttl),
                what="renew partition leases",
                deadline=deadline,
            )
        self._lease_until = asked_at + ttl
        moved = False
        for partition in set(self.states) - held:
            await self._drop(partition, "another hub holds its lease (this hub stalled past it)")
            moved = True
        for partition, state in list(self.states.items()):
            if state is _Partition.OWNED and partition not in wanted:
                self._set(partition, _Partition.LEAVING)
                self._start_move(moves, self._hand_over, partition)
                moved = True
        # a partition still being moved (say, dropped while taken over) waits for the next tick
        for partition in sorted((wanted & held) - set(self.states) - self._moving):
            self._set(partition, _Partition.JOINING)
            self._start_move(moves, self._take_over, partition)
            moved = True
        if moved:
            self.rebalances += 1

    def _start_move(
        self, moves: trio.Nursery, move: Callable[[int], Awaitable[None]], partition: int
    ) -> None:
        self._moving.add(partition)
        moves.start_soon(self._move, move, partition)

    async def _move(self, move: Callable[[int], Awaitable[None]], partition: int) -> None:
        try:
            await move(partition)
        except (RedisError, BusError) as error:  # its lease lapses; the next tick starts over
            await self._drop(partition, f"moving it failed: {error!r}")
        except HubStopped:
            pass  # the group is closing: `close` gives back what it holds and releases the leases
        finally:
            self._moving.discard(partition)

    async def _drop(self, partition: int, why: str) -> None:
        """Another hub may own ``partition`` now: stop reading it, and give back what was read of
        it and not started, claimable at once (its new owner runs that). What runs finishes here."""
        if partition not in self.states:
            return
        stream = self._streams[partition]
        if stream in self.reading:
            self.reading.remove(stream)
        self._set(partition, None)
        unstarted = self.inbox.take_back(lambda d: d.subscription is self and _token(d)[0] == stream)
        held = self.in_hand.pop(stream, set())
        self._settled.unpark_all()  # a hand-over of it may be waiting
        log.warning(
            "%s/%s: stopped reading partition %d: %s; %d message(s) of it given back unstarted, "
            "%d still held here (running, or waiting for a retry) may run again on its new owner",
            self.topic,
            self.group,
            partition,
            why,
            len(unstarted),
            len(held) - len(unstarted),
        )
        if unstarted:
            await self._give_back(stream, [_token(d)[1] for d in unstarted])

    async def _drop_all(self, why: str) -> None:
        for partition in list(self.states):
            await self._drop(partition, why)

    async def _take_over(self, partition: int) -> None:
        """Run the previous owner's unacked entries of ``partition`` first, in id order (it died,
        or it released them unstarted), then read the partition."""
        bus = self.bus
        stream = self._streams[partition]
        await self.ensure_group(stream)
        held = self.in_hand.setdefault(stream, set())
        after = "-"
        while self.states.get(partition) is _Partition.JOINING:

            def take(after: str = after) -> tuple[list[dict[str, Any]], Entries]:
                pending = bus.client.xpending_range(stream, self.group, after, "+", TAKE_OVER_BATCH)
                ids = [entry["message_id"] for entry in pending if entry["message_id"] not in held]
                return pending, (bus.client.xclaim(stream, self.group, bus.consumer, 0, ids) if ids else [])

            pending, claimed = await bus.call(take, what=f"take over {stream}")
            entries = [(entry_id, fields) for entry_id, fields in claimed if fields]
            if self.states.get(partition) is not _Partition.JOINING:  # dropped meanwhile
                await self._give_back(stream, [entry_id for entry_id, _ in entries])
                return
            if not pending:
                self._set(partition, _Partition.OWNED)
                self.reading.append(stream)
                return
            held.update(entry_id for entry_id, _ in entries)  # given back at close if not delivered
            counts = {entry["message_id"]: entry["times_delivered"] + 1 for entry in pending}
            await self._deliver(stream, entries, counts)
            after = f"({text(pending[-1]['message_id'])}"

    async def _hand_over(self, partition: int) -> None:
        """Stop reading ``partition``, let what was read of it run and be acked, release its lease."""
        stream = self._streams[partition]
        if stream in self.reading:
            self.reading.remove(stream)
        while stream in self.read_in_progress:  # a read or reclaim under way may still bring some
            await self._read_ended.park()
        await self._settle(stream)
        async with self._leases_in_use:
            if self.states.get(partition) is _Partition.LEAVING:
                await self.bus.call(
                    partial(self.leases.release, [partition], self.bus.consumer),
                    what="release a partition",
                    deadline=self._lease_until,  # past it, the lease lapses by itself
                )
                self._set(partition, None)
                self.in_hand.pop(stream, None)

    async def close(self) -> None:
        """Stop moving partitions, close as any subscription, then release every lease and leave
        the group's membership, so that the other hubs take the partitions over at once."""
        if self._closed:
            return
        self._stop_coordinating.set()
        with trio.move_on_after(2 * self.bus.options.block + 5):  # a tick under way ends first
            await self._coordinator_done.wait()
        self._coordinator.cancel()
        await self._coordinator_done.wait()
        await super().close()
        partitions = list(self.states)
        for partition in partitions:
            self._set(partition, None)
        await self.bus.call(partial(self.leases.leave, self.bus.consumer, partitions), what="leave the group")


def _streams_of(reply: Any) -> list[tuple[str, Entries]]:
    """The entries of an XREADGROUP reply, per stream: a raw RESP2 reply
    (``[[stream, [[id, [k, v, ...]], ...]], ...]``) or redis-py's (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    out = []
    for stream, entries in streams:
        out.append(
            (
                text(stream),
                [
                    (
                        entry_id,
                        fields
                        if isinstance(fields, dict)
                        else dict(zip(fields[::2], fields[1::2], strict=True)),
                    )
                    for entry_id, fields in entries
                ],
            )
        )
    return out


def _token(delivery: Delivery) -> tuple[str, bytes, bytes]:
    """(stream, entry id, raw entry) of a delivery this transport made."""
    return cast(tuple[str, bytes, bytes], delivery.token)
