"""The hub's one reader: a blocking wake-up over every stream any group of the hub consumes,
whatever the number of groups.

Redis cannot block one ``XREADGROUP`` over several consumer groups, so the reader does not read
for the groups: it waits. An ``XREAD COUNT 1 BLOCK`` (no group, nothing delivered, nothing to
ack) covers every stream on which some watcher (a subscription, or the watch of a lazy template)
has read everything there was; a watcher still catching up, or waiting for credit, is not waited
for. When Redis answers, each watcher that has not read past the entry that arrived is nudged,
and reads for itself with a non-blocking ``XREADGROUP`` on the bus's shared, pipelined
connection. So an idle hub makes one call per ``block`` seconds.

Why no wake-up is ever missed: a watcher waits on a stream from its *position*, an entry id
below which its group has been delivered everything: the last entry of a read that found
everything there was (or the stream's end, ``XREVRANGE + - COUNT 1`` pipelined just before such
a read). Stream ids only grow, so whatever the group has not been delivered has a higher id,
and Redis answers the ``XREAD`` for it.

A watcher that begins to wait while an ``XREAD`` is under way and does not cover it rings that
``XREAD``'s doorbell, a stream of its own (``<prefix>doorbell:<consumer>:<tier>``, one entry,
expiring) that it also watches: the reader asks again at once, with the new set.

Asking again costs Redis work for every stream asked about, so the streams are asked about in
two tiers, each one ``XREAD`` on a connection of its own: *hot* streams had a message within
`HOT_FOR` seconds, *cold* ones did not. A busy topic among a thousand idle ones rings only the
hot ``XREAD``, which asks about a few streams; the cold one, over everything else, is asked again
about once a ``block``.

When the hot streams are waited on by one subscription alone (a hub with one busy action), the
hot tier blocks in that subscription's own ``XREADGROUP`` instead of an ``XREAD``, and hands it
what it read: a message then costs one round trip, as with a blocking consumer of its own. The
doorbell then needs a consumer group of the same name, which the tier creates on it.

In the cluster layout (`layout.ClusterKeys`) Redis cannot block one ``XREAD`` over streams of
several slots, so the reader keeps one tier per slot in use instead of hot and cold (a slot holds
the streams of the topics of one shard: few per tier), each with its own doorbell in that slot
and its own blocking connection, each reading for one subscription as the hot tier does. A
slot tier over several subscriptions (topics sharing a shard) asks again only once those its
answer nudged wait again (or `RING_INTERVAL` passed): else each would ring its doorbell on its
return, and every message would cost three XREADs.

The periodic chores that used to run per group run once per hub, batched in scripts (see
`RedisStreamsBus._look_after`).
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from redis.exceptions import NoPermissionError, ResponseError

from .dedicated_wire import DedicatedWire
from .layout import ClusterKeys
from .options import text
from .wire import Command, WireConnection

if TYPE_CHECKING:
    from .streams import RedisStreamsBus

log = logging.getLogger("actionhub.redis")

#: Seconds between two rings of a doorbell, at least.
RING_INTERVAL = 0.01

#: Seconds a stream stays in the hot tier after its last message.
HOT_FOR = 2.0

#: Seconds a doorbell outlives its last ring or group.
DOORBELL_TTL = 600

Position = tuple[int, int]
#: which tier asks about a stream: "hot" or "cold" in the single layout, its slot in the cluster one
TierKey = str | int
#: a stream's entries as read: (id, fields)
Entries = list[tuple[bytes, dict[bytes, bytes]]]


def id_order(entry_id: bytes | str) -> Position:
    """A stream entry id as a sortable pair (``1700000000000-3`` -> (1700000000000, 3))."""
    ms, _, seq = text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def later_id(a: bytes, b: bytes | None) -> bytes:
    """The later of two entry ids."""
    return a if b is None or id_order(a) >= id_order(b) else b


class Watcher(abc.ABC):
    """What the reader waits for: something that reads some streams once they have new entries."""

    @abc.abstractmethod
    def nudge(self, stream: str) -> None:
        """``stream`` has an entry past the position this watcher waited from; it waits no more."""


class BlockingReader(Watcher):
    """A watcher the hot tier can read for, with a blocking ``XREADGROUP`` of its group."""

    group: str

    @abc.abstractmethod
    def blocking_count(self, streams: int) -> int:
        """How many entries per stream a read for it may bring now (0: do not read for it)."""

    @abc.abstractmethod
    async def take_blocking_read(self, found: dict[str, Entries], count: int) -> None:
        """What a read for it brought, per stream (``count`` asked of each)."""


class Reader:
    """The wake-up of a `RedisStreamsBus` (see the module's docstring)."""

    def __init__(self, bus: RedisStreamsBus) -> None:
        self.bus = bus
        self._waits: dict[str, dict[Watcher, Position]] = {}  # per stream, who waits, from where
        self._tier_of: dict[str, _Tier] = {}  # per waited-on stream, the XREAD that asks about it
        self._active_at: dict[str, float] = {}  # per stream, when it last had a message
        keys = bus.keys
        self._slots = keys if isinstance(keys, ClusterKeys) else None  # the cluster layout's
        self.tiers: dict[TierKey, _Tier] = {}
        self._nursery: trio.Nursery | None = None  # while running: where slot tiers run
        if self._slots is None:
            self.hot = self.tiers["hot"] = _Tier(self, "hot", reads_for=True)
            self.cold = self.tiers["cold"] = _Tier(self, "cold", reads_for=False)
        self.polling = False  # XREAD refused (an ACL without it): poll every `block` instead

    # ------------------------------------------------------------------ watchers

    def wait(self, stream: str, watcher: Watcher, position: bytes) -> None:
        """Nudge ``watcher`` once ``stream`` has an entry past ``position``; make sure Redis is
        asked about it (at once, if the question under way does not cover it)."""
        at = id_order(position)
        self._waits.setdefault(stream, {})[watcher] = at
        tier = self._tier_of.get(stream)
        if tier is None:
            if self._slots is not None:
                tier = self._slot_tier(self._slots.slot_of(stream), stream)
            else:
                recent = trio.current_time() - self._active_at.get(stream, -math.inf) < HOT_FOR
                tier = self.hot if recent else self.cold
            self._tier_of[stream] = tier
        tier.ask_from(stream, at, position, watcher)

    def _slot_tier(self, slot: int, stream: str) -> _Tier:
        """The tier of ``slot`` (cluster layout), made and started on first use; ``stream``: one
        of that slot, next to which its doorbell goes."""
        tier = self.tiers.get(slot)
        if tier is None:
            tier = self.tiers[slot] = _Tier(self, str(slot), reads_for=True, near=stream, slot=slot)
            if self._nursery is not None:
                self._nursery.start_soon(tier.run)
        return tier

    def stop_waiting(self, stream: str, watcher: Watcher) -> None:
        waits = self._waits.get(stream)
        if waits is None or waits.pop(watcher, None) is None:
            return
        tier = self._tier_of[stream]
        if not waits:
            del self._waits[stream], self._tier_of[stream]
            tier.forget(stream)
        else:
            earliest = min(waits.values())
            tier.set_from(stream, earliest)

    def nudge(self, stream: str, arrived: Position) -> list[Watcher]:
        """Nudge the watchers of ``stream`` that have not read as far as ``arrived``; returns them."""
        self._active_at[stream] = trio.current_time()
        nudged = []
        for watcher, at in list(self._waits.get(stream, {}).items()):
            if at < arrived:
                self.stop_waiting(stream, watcher)
                watcher.nudge(stream)
                nudged.append(watcher)
        return nudged

    def waiting(self, stream: str, watcher: Watcher) -> bool:
        """Whether ``watcher`` waits on ``stream``."""
        return watcher in self._waits.get(stream, ())

    def cool_down(self, now: float) -> None:
        """Move the hot streams that had no message for `HOT_FOR` to the cold tier (single layout)."""
        for stream in [s for s in self.hot.streams() if now - self._active_at.get(s, -math.inf) >= HOT_FOR]:
            at, position = self.hot.forget(stream)
            self._tier_of[stream] = self.cold
            self.cold.ask_from(stream, at, position, None)

    async def let_go(self, watcher: Watcher) -> None:
        """Return once no read for ``watcher`` is under way (one is cut short): it is closing."""
        for tier in list(self.tiers.values()):
            await tier.let_go(watcher)

    def _blocking_reader(self, streams: Iterable[str]) -> BlockingReader | None:
        """The one watcher waiting on every one of ``streams``, if it is the only one waiting on
        them and the hot tier can read for it."""
        only: Watcher | None = None
        for stream in streams:
            watchers = self._waits[stream]
            if len(watchers) != 1 or (only is not None and only not in watchers):
                return None
            (only,) = watchers
        return only if isinstance(only, BlockingReader) else None

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Wait for new entries and nudge their watchers, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for tier in list(self.tiers.values()):
                    nursery.start_soon(tier.run)
                await trio.sleep_forever()
            finally:
                self._nursery = None


class _Tier:
    """One blocking ``XREAD`` over some streams, on a connection of its own, with a doorbell.
    ``reads_for``: it may block in one subscription's ``XREADGROUP`` instead (`Reader`); ``slot``
    (cluster layout): the slot of every stream it asks about, and ``near`` one of them, whose slot
    its doorbell shares."""

    def __init__(
        self, reader: Reader, name: str, *, reads_for: bool, near: str | None = None, slot: int | None = None
    ) -> None:
        self.reader = reader
        self.name = name
        self.reads_for = reads_for
        self._near = near
        self.slot = slot
        self._from: dict[str, tuple[Position, bytes]] = {}  # per stream, where to ask from
        self._version = 0  # bumped whenever `_from` changes
        self._question: tuple[int, Command, dict[str, Position]] | None = None  # the last XREAD
        self._asking: dict[str, Position] | None = None  # the XREAD under way: stream -> from
        self._changed = trio.Event()
        self._rung = False
        self._rang_at = -math.inf
        self._doorbell = ""
        self._doorbell_at = b"0-0"
        self._doorbell_groups: set[str] = set()  # groups created on the doorbell, to read for them
        self._reading_for: BlockingReader | None = None  # whose XREADGROUP is under way, if any
        self._read_done = trio.Event()

    def streams(self) -> list[str]:
        return list(self._from)

    def ask_from(self, stream: str, at: Position, position: bytes, watcher: Watcher | None) -> None:
        """Ask about ``stream`` from ``position`` at the latest, for ``watcher``; at once if the
        question under way does not cover it (a read for one watcher covers no other)."""
        earliest = self._from.get(stream)
        if earliest is None or at < earliest[0]:
            self._from[stream] = (at, position)
            self._version += 1
        asking = self._asking
        if asking is None:
            self._changed.set()
            return
        asked_from = asking.get(stream)
        foreign = self._reading_for is not None and watcher is not self._reading_for
        if (asked_from is None or at < asked_from or foreign) and not self._rung:
            self._rung = True
            assert self.reader.bus._nursery is not None
            self.reader.bus._nursery.start_soon(self._ring)

    def set_from(self, stream: str, at: Position) -> None:
        """Ask about ``stream`` from ``at`` (a later position: a watcher left)."""
        if self._from[stream][0] != at:
            self._from[stream] = (at, f"{at[0]}-{at[1]}".encode())
            self._version += 1

    def forget(self, stream: str) -> tuple[Position, bytes]:
        self._version += 1
        return self._from.pop(stream)

    async def let_go(self, watcher: Watcher) -> None:
        while self._reading_for is watcher:
            if not self._rung:
                self._rung = True
                await self._ring()
            await self._read_done.wait()

    async def _ring(self) -> None:
        # at most every RING_INTERVAL: while many groups start (or catch up) at once, one new
        # question covers many of them
        await trio.sleep_until(self._rang_at + RING_INTERVAL)
        self._rang_at = trio.current_time()
        if self._asking is None:  # answered meanwhile: the next question covers it already
            return
        doorbell = self._doorbell
        await self.reader.bus.execute(
            [("XADD", doorbell, "MAXLEN", 1, "*", "r", 1), ("EXPIRE", doorbell, DOORBELL_TTL)],
            what="ring the reader's doorbell",
        )

    async def run(self) -> None:
        bus = self.reader.bus
        self._doorbell = bus.keys.doorbell(f"{bus.consumer}:{self.name}", near=self._near)
        # a blocking read holds a connection: one of its own (in the cluster layout, to the node
        # of this tier's slot: on the thread path redis-py routes each read there by its keys)
        wire = bus.new_wire(self.slot)
        try:
            await bus.keep_running(f"waiting for messages ({self.name})", partial(self._wake_once, wire))
        finally:
            if wire is not None:
                wire.close()

    async def _wake_once(self, wire: WireConnection | DedicatedWire | None) -> None:
        reader, bus = self.reader, self.reader.bus
        if reader._slots is None and self is reader.hot:
            reader.cool_down(trio.current_time())
        if not self._from:
            await self._changed.wait()
            self._changed = trio.Event()
            return
        self._changed = trio.Event()
        if reader.polling:
            await trio.sleep(bus.options.block)
            for stream in list(self._from):
                reader.nudge(stream, (1 << 62, 0))
            return
        if self.reads_for and (blocking := reader._blocking_reader(self._from)) is not None:
            count = blocking.blocking_count(len(self._from))
            if count:
                await self._read_for(blocking, count, wire)
                return
        question = self._question
        if question is None or question[0] != self._version:  # else: ask the same again
            streams = [*self._from, self._doorbell]
            ids = [position for _, position in self._from.values()]
            block = int(bus.options.block * 1000)
            command: Command = ("XREAD", "COUNT", 1, "BLOCK", block, "STREAMS", *streams, *ids)
            question = self._question = (self._version, command, {s: at for s, (at, _) in self._from.items()})
        _, asked, self._asking = question
        self._rung = False
        try:
            if wire is not None:
                (reply,) = await bus.call_async(
                    partial(wire.execute, (*asked, self._doorbell_at), timeout=bus.options.block + 10),
                    what="wait for messages",
                )
            else:
                reply = await bus.call(
                    partial(bus.client.execute_command, *asked, self._doorbell_at),
                    what="wait for messages",
                    blocks=True,
                )
        except NoPermissionError as error:
            if not reader.polling:
                log.error(
                    "redis refused XREAD (%s): this hub polls its groups every %s s instead; "
                    "grant +xread and +xrevrange (see the README's least-privilege user)",
                    error,
                    bus.options.block,
                )
            reader.polling = True
            return
        finally:
            self._asking = None
        nudged: list[tuple[str, Watcher]] = []
        for stream, entry_id in _first_entries(reply):
            if stream == self._doorbell:
                self._doorbell_at = entry_id
            else:
                nudged += [(stream, watcher) for watcher in reader.nudge(stream, id_order(entry_id))]
        if self.slot is not None and nudged:
            await self._hold(nudged)

    async def _hold(self, nudged: list[tuple[str, Watcher]]) -> None:
        """Ask again once the watchers just nudged wait again (their read takes a round trip),
        or after `RING_INTERVAL`, whichever comes first (cluster layout). Asking again at once
        would leave out their streams: each would ring the doorbell on its return, for a third
        XREAD per message. Entries arriving meanwhile on the other streams are not missed (each
        is asked about from its position), only answered up to `RING_INTERVAL` later."""
        reader = self.reader
        with trio.move_on_after(RING_INTERVAL):
            while not all(reader.waiting(stream, watcher) for stream, watcher in nudged):
                await self._changed.wait()
                self._changed = trio.Event()

    async def _read_for(
        self, blocking: BlockingReader, count: int, wire: WireConnection | DedicatedWire | None
    ) -> None:
        """Block in ``blocking``'s own XREADGROUP over this tier's streams and its doorbell, and
        hand it what comes."""
        reader, bus = self.reader, self.reader.bus
        group, doorbell = blocking.group, self._doorbell
        if group not in self._doorbell_groups:
            try:
                await bus.execute(
                    [
                        ("XGROUP", "CREATE", doorbell, group, "$", "MKSTREAM"),
                        ("EXPIRE", doorbell, DOORBELL_TTL),
                    ],
                    what="create a group on the reader's doorbell",
                )
            except ResponseError as error:
                if not str(error).startswith("BUSYGROUP"):
                    raise
            self._doorbell_groups.add(group)
            return  # what to read may have changed meanwhile: decide again
        streams = [*self._from, doorbell]
        block = int(bus.options.block * 1000)
        command: Command = ("XREADGROUP", "GROUP", group, bus.consumer, "COUNT", count, "BLOCK", block)
        command = (*command, "STREAMS", *streams, *(">",) * len(streams))
        self._asking = {s: at for s, (at, _) in self._from.items()}
        self._reading_for, self._read_done, self._rung = blocking, trio.Event(), False
        try:
            if wire is not None:
                (reply,) = await bus.call_async(
                    partial(wire.execute, command, timeout=bus.options.block + 10), what="wait for messages"
                )
            else:
                reply = await bus.call(
                    partial(bus.client.execute_command, *command), what="wait for messages", blocks=True
                )
        except ResponseError as error:
            if not str(error).startswith("NOGROUP"):
                raise
            # the doorbell expired, or the group is gone: the subscription reads (and recreates it)
            self._doorbell_groups.discard(group)
            for stream in list(self._from):
                reader.nudge(stream, (1 << 62, 0))
            return
        finally:
            self._asking = self._reading_for = None
            self._read_done.set()
        found = dict(streams_of(reply))
        rings = found.pop(doorbell, None)
        if rings:  # acked, or the doorbell's pending list would grow with every ring
            await bus.execute([("XACK", doorbell, group, *(ring for ring, _ in rings))], what="ack a ring")
        now = trio.current_time()
        for stream in found:
            reader._active_at[stream] = now
            reader.stop_waiting(stream, blocking)
        if found:
            await blocking.take_blocking_read(found, count)


def streams_of(reply: Any) -> list[tuple[str, Entries]]:
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


def _first_entries(reply: Any) -> Iterable[tuple[str, bytes]]:
    """(stream, id of the entry returned) of an ``XREAD COUNT 1`` reply, raw RESP2 or redis-py's."""
    if not reply:
        return ()
    streams: Sequence[Any] = list(reply.items()) if isinstance(reply, dict) else reply
    return [(text(stream), entries[0][0]) for stream, entries in streams if entries]
