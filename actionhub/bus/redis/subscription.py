"""One consumer group of a topic on Redis Streams: reading, delivering, settling. Reclaiming
what dead hubs left: reclaim.py; the dead letters' commands: letters.py."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
from redis.exceptions import ResponseError

from ...errors import HubStopped, MalformedMessage
from ..base import Delivery, Inbox, Subscription
from .by_slot import by_slot
from .common import RedisProgress, is_nogroup
from .entries import delayed_member
from .letters import Letter, Settlement, malformed_letter, move_to_dead, settle_commands, settlement
from .options import text
from .reader import BlockingReader, Entries, later_id, streams_of
from .reclaim import reclaim
from .replication import confirmed_move
from .wire import Command

if TYPE_CHECKING:
    from .streams import RedisStreamsBus

log = logging.getLogger("actionhub.redis")


#: Seconds a closing subscription lets a read under way finish (reads do not block in Redis).
CLOSE_WAIT = 1.0


async def ensure_group(bus: RedisStreamsBus, stream: str, group: str, *, earliest: bool) -> None:
    """Create consumer group ``group`` on ``stream`` if it does not exist (see
    `scripts.CREATE_GROUP` for where it starts; ``earliest``: at the stream's start)."""
    ((created, skipped),) = await bus.run_scripts(
        [(bus._create_group, [stream], [group, int(earliest)])], what=f"create group {group} on {stream}"
    )
    if created and skipped:
        log.info(
            "%s: new group %s starts after the %d entries already there (start='earliest' reads them)",
            stream,
            group,
            skipped,
        )


class StreamSubscription(RedisProgress, Subscription, BlockingReader):
    """One consumer group of a topic, feeding one inbox: the topic's stream, and the streams of
    its partitions once it has some (keyed messages are there), all read in one XREADGROUP.

    It reads when the hub's `Reader` nudges it (a stream it reads has an entry it has not seen),
    when the hub-wide look for abandoned entries finds some of its own to reclaim, and while a
    read comes back full; otherwise it waits, costing nothing. Reads never block in Redis: they
    go over the bus's shared connection, pipelined with every other group's."""

    bus: RedisStreamsBus

    def __init__(self, bus: RedisStreamsBus, topic: str, group: str, inbox: Inbox, *, earliest: bool) -> None:
        self.bus = bus
        self.earliest = earliest
        self.topic = topic
        self.group = group
        self.inbox = inbox
        self.stream = bus.keys.stream(topic)
        self.reading: list[str] = []  # the streams the read loop reads
        self.unread: set[str] = set()  # streams of `reading` that may hold entries not yet read
        self.positions: dict[str, bytes] = {}  # per stream, where a read found everything read
        self._nudges: dict[str, int] = {}  # per stream, nudges so far (one during a read keeps it unread)
        self._probe: set[str] = set()  # streams whose next read also asks where they end
        self._nudged = trio.Event()  # set when there is something to do: read, reclaim, follow
        self.reclaim_due = False  # the hub-wide look for abandoned entries found some (`reclaim_soon`)
        self.follow_due = False  # the topic got partition streams: read them too
        self.in_hand: dict[str, set[bytes]] = {}  # per stream, ids read and not settled: leases to renew
        self.acks: dict[str, list[bytes]] = {}
        self.letters: list[Letter] = []  # malformed entries for the acker to dead-letter
        self.partitions: int | None = None  # the topic's partition count, once it has some
        self._group_bytes = group.encode()
        self._groups_of: dict[str, set[bytes]] = {}  # per stream, its groups as last seen: retries' targets
        self._scope = trio.CancelScope()
        self._idle: trio.CancelScope | None = None  # while the read loop waits for something to do
        self._done = trio.Event()
        self._closing = False
        self._closed = False
        self._reclaimed = 0  # in the current run of reclaims, for one log line at its end
        self._settled = trio.lowlevel.ParkingLot()  # woken when a stream's in_hand becomes empty
        self._read_ended = trio.lowlevel.ParkingLot()  # woken when a read returns
        self.read_in_progress: tuple[str, ...] = ()  # the streams of the read under way
        self.batch = max(1, inbox.free_credit() // 2)

    async def start(self, nursery: trio.Nursery) -> None:
        """Create the consumer group on each stream it reads, then start reading."""
        await self.ensure_group(self.stream)
        self.read_stream(self.stream)
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
            self.read_stream(stream)

    def follows_partitions(self) -> bool:
        """Whether this subscription waits for its topic's first partition streams."""
        return self.partitions is None

    def take_settled(self) -> tuple[dict[str, list[bytes]], list[Letter]]:
        """The acks and dead letters owed to Redis, handed over to be sent."""
        taken = self.acks, self.letters
        self.acks, self.letters = {}, []
        return taken

    def owe(self, acks: dict[str, list[bytes]], letters: list[Letter]) -> None:
        """Take back acks and letters that could not be sent, ahead of newer ones."""
        for stream, ids in acks.items():
            self.acks.setdefault(stream, [])[:0] = ids
        self.letters[:0] = letters

    async def ensure_group(self, stream: str, *, from_start: bool = False) -> None:
        """Create the consumer group on ``stream`` if it does not exist (see scripts.CREATE_GROUP for
        where it starts; ``from_start``: at the stream's start whatever ``start`` says)."""
        await ensure_group(self.bus, stream, self.group, earliest=self.earliest or from_start)

    # ------------------------------------------------------------------ what to read, and when

    def read_stream(self, stream: str) -> None:
        """Read ``stream`` too, from now on (at once: it may hold entries already)."""
        if stream not in self.reading:
            self.reading.append(stream)
            self._probe.add(stream)
            self.nudge(stream)

    def stop_reading(self, stream: str) -> None:
        if stream in self.reading:
            self.reading.remove(stream)
            self.unread.discard(stream)
            self.bus.reader.stop_waiting(stream, self)

    def nudge(self, stream: str) -> None:
        self.bus.reader.stop_waiting(stream, self)
        self.unread.add(stream)
        self._nudges[stream] = self._nudges.get(stream, 0) + 1
        self._nudged.set()

    def blocking_count(self, streams: int) -> int:
        if self._closing:
            return 0
        return -(-self.inbox.free_credit() // streams)

    async def take_blocking_read(self, found: dict[str, Entries], count: int) -> None:
        for stream, entries in found.items():
            if len(entries) >= count:
                self.nudge(stream)  # there may be more
            else:
                self._read_to(stream, entries[-1][0])
        with contextlib.suppress(HubStopped):  # the group stands down: what it read went back
            await self._deliver_all(found)

    def _read_to(self, stream: str, end: bytes) -> None:
        """``stream`` has been read to ``end``, its last entry: wait for what comes after it."""
        self._probe.discard(stream)
        self.unread.discard(stream)
        self.positions[stream] = later_id(end, self.positions.get(stream))
        if not self._closing:
            self.bus.reader.wait(stream, self, self.positions[stream])

    async def _deliver_all(self, found: dict[str, Entries]) -> None:
        """Deliver what one read brought, stream by stream. If the group stands down or stops
        meanwhile, the rest goes back at once, claimable, and `HubStopped` is raised."""
        batches = list(found.items())
        for index, (stream, entries) in enumerate(batches):
            try:
                if self.accepts(stream):
                    await self._deliver(stream, entries, None)
                else:
                    await self._give_back(stream, [entry_id for entry_id, _ in entries])
            except HubStopped:
                for later, rest in batches[index + 1 :]:
                    await self._give_back(later, [entry_id for entry_id, _ in rest])
                raise

    def reclaim_soon(self) -> None:
        """Entries of this group were found abandoned: reclaim them before the next read."""
        self.reclaim_due = True
        self._nudged.set()

    def follow_partitions_soon(self) -> None:
        """The topic has partition streams now: read them too."""
        self.follow_due = True
        self._nudged.set()

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

    async def _wait_for(self, wait: Callable[[], Awaitable[object]]) -> bool:
        """Wait for something to do; False once the subscription closes (or its inbox does)."""
        if self._closing:
            return False
        with trio.CancelScope() as self._idle:
            try:
                await wait()
            except HubStopped:
                return False
        self._idle = None
        return not self._closing

    async def read_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            with self._scope:
                while await self._wait_for(partial(self.inbox.wait_for_credit, self.batch)):
                    # half the buffer at least: fewer, fuller batches; the workers still have work
                    credit = self.inbox.free_credit()
                    try:
                        if self.reclaim_due:
                            self.reclaim_due = False
                            if await reclaim(self, credit):
                                self.reclaim_due = True  # there may be more: reclaim again before reading
                                continue
                        if self.follow_due:
                            self.follow_due = False
                            await self._follow_partitions(from_start=True)
                        streams = [stream for stream in self.reading if stream in self.unread]
                        if streams:
                            await self._read(credit, streams)
                        elif not await self._wait_for(self._nudged.wait):
                            return
                        else:
                            self._nudged = trio.Event()
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
                                self.nudge(stream)
                        else:  # say, OOM: keep the group alive and try again later
                            log.error("%s: reading failed: %r; retrying in a second", self.topic, exc)
                            await trio.sleep(1)
                    except HubStopped:
                        return
        finally:
            self.read_in_progress = ()
            self._read_ended.unpark_all()
            self._done.set()

    async def _read(self, credit: int, streams: list[str]) -> None:
        """One non-blocking XREADGROUP over ``streams``. A stream whose read comes back short has
        been read to its end: its last entry is where this group waits from (see the reader).
        One that comes back empty says nothing of where it ends, so it is read again with an
        XREVRANGE pipelined before the XREADGROUP (a stream's first read has one too)."""
        bus = self.bus
        count = -(-credit // len(streams))  # at most about `credit` in all, whichever streams have them
        nudges = [self._nudges.get(stream, 0) for stream in streams]
        probed = [stream for stream in streams if stream in self._probe]
        ends: list[Command] = [("XREVRANGE", stream, "+", "-", "COUNT", 1) for stream in probed]
        read: Command = ("XREADGROUP", "GROUP", self.group, bus.consumer, "COUNT", count, "STREAMS")
        # one XREADGROUP per slot in the cluster layout (one in all in the single one)
        reads: list[Command] = [
            (*read, *group, *(">",) * len(group)) for group in by_slot(bus.keys, streams, lambda s: s)
        ]
        self.read_in_progress = tuple(streams)
        try:
            replies = await bus.execute([*ends, *reads], what=f"read {self.stream}")
            lasts = replies[: len(ends)]
            found = {
                stream: entries for reply in replies[len(ends) :] for stream, entries in streams_of(reply)
            }
            last_of = {
                stream: (last[0][0] if last else b"0-0") for stream, last in zip(probed, lasts, strict=True)
            }
            for stream, before in zip(streams, nudges, strict=True):
                entries = found.get(stream, ())
                if len(entries) >= count or self._nudges.get(stream, 0) != before:
                    continue  # there may be more
                end = entries[-1][0] if entries else last_of.get(stream)
                if end is None:
                    self._probe.add(stream)
                else:
                    self._read_to(stream, end)
            await self._deliver_all(found)
        finally:
            self.read_in_progress = ()
            self._read_ended.unpark_all()

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
        for entry_id, fields, reason in malformed:
            self.inbox.note_malformed()
            self.letters.append(malformed_letter(stream, entry_id, fields, reason))
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

    def add_to(self, pipe: Any, acks: dict[str, list[bytes]], letters: list[Letter]) -> None:
        """Queue `settle_commands` on ``pipe``."""
        for command in self.settle_commands(acks, letters):
            pipe.execute_command(*command)

    def settle_commands(self, acks: dict[str, list[bytes]], letters: list[Letter]) -> list[Command]:
        """The letters into the dead letters, then the acks of the acked entries and of the
        letters' entries."""
        return settle_commands(self.bus, self.topic, self.group, acks, letters)

    def settlement(self, acks: dict[str, list[bytes]], letters: list[Letter]) -> Settlement:
        """`settle_commands` split by slot, for the cluster layout (letters.py)."""
        return settlement(self.bus, self.topic, self.group, acks, letters)

    # ------------------------------------------------------------------ settling

    def _forget_entry(self, stream: str, entry_id: bytes) -> None:
        held = self.in_hand.get(stream)
        if held is not None:
            held.discard(entry_id)
            if not held:
                self._settled.unpark_all()

    async def ack(self, delivery: Delivery) -> None:
        stream, entry_id, _ = token_of(delivery)
        self._forget_entry(stream, entry_id)
        self.acks.setdefault(stream, []).append(entry_id)
        self.bus.wake_acker()

    async def retry(self, delivery: Delivery, *, delay: float, error: str | None) -> None:
        bus = self.bus
        stream, entry_id, _ = token_of(delivery)
        entry = attrs.evolve(delivery.message, attempt=delivery.message.attempt + 1).encode()
        member = delayed_member("x", stream, self.group, entry)
        keys = [bus.keys.delayed_of(stream), stream]  # one slot in the cluster layout
        args: list[str | bytes | float] = [delay, member, self.group, entry_id]
        if bus.options.durable:
            script = bus._schedule
            command: Command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            await confirmed_move(bus, [command], what="schedule retry", scripts=[script])
        else:
            await bus.call(lambda: bus._schedule(keys=keys, args=args), what="schedule retry")
        self._forget_entry(stream, entry_id)

    async def dead_letter(
        self, delivery: Delivery, *, reason: str, error: str | None = None, traceback: str | None = None
    ) -> None:
        stream, entry_id, raw = token_of(delivery)
        letter = Letter(stream, entry_id, raw, reason, delivery.message.attempt, error, traceback)
        await move_to_dead(self.bus, self.topic, self.group, letter)
        self._forget_entry(stream, entry_id)

    async def close(self) -> None:
        """Stop reading; flush acks; make what was read but never started claimable at once."""
        if self._closed:
            return
        self._closed = self._closing = True
        if self._idle is not None:
            self._idle.cancel()
        await self.bus.reader.let_go(self)  # what a read for it brings is in in_hand, given back below
        with trio.move_on_after(CLOSE_WAIT):  # a read under way brings what it read into in_hand
            await self._done.wait()
        self._scope.cancel()
        await self._done.wait()
        for stream in list(self.reading):
            self.stop_reading(stream)
        bus = self.bus
        await bus.flush_acks()
        bus._forget(self)
        for stream in list(self.in_hand):
            await self._release_unstarted(stream)

    async def _release_unstarted(self, stream: str) -> None:
        """Make what this subscription holds of ``stream`` claimable at once (it was never started)."""
        await self._give_back(stream, list(self.in_hand.pop(stream, ())))


def token_of(delivery: Delivery) -> tuple[str, bytes, bytes]:
    """(stream, entry id, raw entry) of a delivery this transport made."""
    return cast(tuple[str, bytes, bytes], delivery.token)
