"""Partitions of a topic, and which live hub owns which: the building blocks of ordered groups.

A key's partition is ``crc32(key) % partitions`` (`actionhub.bus.redis.keys.partition_of`), so a
publisher in any language can compute it.
Hubs of one consumer group announce themselves in a sorted set scored by the Redis clock time at
which their membership lapses; every hub derives the same owner for each partition from the live
members by rendezvous (highest random weight) hashing with bounded loads: no hub gets more than
its even share, and a joining or leaving hub moves few partitions besides its own. Owning a
partition is a lease key (SET NX PX, renewed, released only by its holder): the derived assignment
says who should read a partition, the lease makes sure only one hub does, even while hubs
disagree about membership.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from redis.exceptions import RedisError

from ...errors import BusError, HubStopped
from ..base import Inbox
from . import scripts
from .keys import Keys
from .options import text
from .reader import Entries
from .scripts_slots import register
from .subscription import StreamSubscription, token_of

if TYPE_CHECKING:
    from .streams import RedisStreamsBus

log = logging.getLogger("actionhub.redis")

#: Pending entries per round trip when a hub takes a partition over.
TAKE_OVER_BATCH = 1000


def _weight(member: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{member}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(members: Iterable[str], partitions: int) -> dict[int, str]:
    """The owner of each partition among ``members``: rendezvous hashing with bounded loads.
    Every (member, partition) pair has a weight; going from the heaviest pair down, a partition
    goes to the member of that pair unless it already has its share: ``partitions // members``,
    or one more for the first ``partitions % members`` members to reach that. Every member thus
    gets its even share, rounded down or up. The same members give the same answer everywhere;
    empty if there are no members."""
    live = sorted(set(members))
    if not live:
        return {}
    share, extra = divmod(partitions, len(live))
    load = dict.fromkeys(live, 0)
    owners: dict[int, str] = {}
    pairs = sorted(((_weight(m, p), m, p) for m in live for p in range(partitions)), reverse=True)
    for _, member, partition in pairs:
        if partition in owners:
            continue
        if load[member] == share and extra:
            extra -= 1  # one of the members that get one more
        elif load[member] >= share:
            continue
        owners[partition] = member
        load[member] += 1
    return owners


class PartitionLeases:
    """Membership and partition leases of one consumer group of one topic, in Redis. Blocking
    calls on a redis-py client: from trio, run them through the bus's ``call``."""

    def __init__(self, client: Any, keys: Keys, topic: str, group: str) -> None:
        self.client = client
        self.keys, self.topic, self.group = keys, topic, group
        self.members_key = keys.members(topic, group)
        self._heartbeat = register(client, keys, scripts.HEARTBEAT)
        self._claim = register(client, keys, scripts.CLAIM_LEASES)
        self._release = register(client, keys, scripts.RELEASE_LEASES)

    def lease_key(self, partition: int) -> str:
        return self.keys.lease(self.topic, self.group, partition)

    def heartbeat(self, member: str, ttl: float) -> list[str]:
        """Say ``member`` is live for ``ttl`` seconds more; the live members, sorted."""
        script, keys, args = self.heartbeat_call(member, ttl)
        return self.members(script(keys=keys, args=args))

    def heartbeat_call(self, member: str, ttl: float) -> tuple[Any, list[str], list[Any]]:
        """`heartbeat` as (script, keys, args), for `RedisBusBase.run_scripts`."""
        return self._heartbeat, [self.members_key], [member, max(1, int(ttl * 1000))]

    @staticmethod
    def members(reply: Sequence[bytes | str]) -> list[str]:
        """The live members in a heartbeat's reply, sorted."""
        return sorted(m.decode() if isinstance(m, bytes) else m for m in reply)

    def claim(self, partitions: Sequence[int], member: str, ttl: float) -> set[int]:
        """Take or renew the leases of ``partitions`` for ``ttl`` seconds; those ``member``
        holds now (the others are held by other members)."""
        if not partitions:
            return set()
        script, keys, args = self.claim_call(partitions, member, ttl)
        return self.held(partitions, script(keys=keys, args=args))

    def claim_call(
        self, partitions: Sequence[int], member: str, ttl: float
    ) -> tuple[Any, list[str], list[Any]]:
        """`claim` as (script, keys, args), for `RedisBusBase.run_scripts`."""
        return self._claim, [self.lease_key(p) for p in partitions], [member, max(1, int(ttl * 1000))]

    @staticmethod
    def held(partitions: Sequence[int], reply: Sequence[int]) -> set[int]:
        """The partitions a claim's reply says are held."""
        return {partitions[int(i) - 1] for i in reply}

    def release(self, partitions: Sequence[int], member: str) -> int:
        """Give up the leases of ``partitions`` that ``member`` holds; how many it held."""
        if not partitions:
            return 0
        return int(self._release(keys=[self.lease_key(p) for p in partitions], args=[member]))

    def leave(self, member: str, partitions: Sequence[int]) -> None:
        """``member`` stops: its leases of ``partitions`` and its membership end now."""
        self.release(partitions, member)
        self.client.zrem(self.members_key, member)


class _Partition(enum.Enum):
    """Where this hub stands with one partition it holds the lease of."""

    JOINING = "joining"  # lease taken; the previous owner's unacked entries are being taken over
    OWNED = "owned"  # read
    LEAVING = "leaving"  # not read any more; what was read is being settled, then the lease released


class OrderedSubscription(StreamSubscription):
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
        self.read_stream(self.stream)
        await nursery.start(self.read_loop)
        await nursery.start(self._run_coordinator)

    async def _run_coordinator(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with self._coordinator:
            await self._coordinate(task_status=task_status)

    async def _follow_partitions(self, *, from_start: bool) -> None:
        """Partitions come with their leases (see `_rebalance`), not all at once."""

    def blocking_count(self, streams: int) -> int:
        return 0  # its reads must be seen by a hand-over (`read_in_progress`): it reads itself

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
        # over the wire, not in a thread: a renewal must not queue behind a take-over's calls
        (reply,) = await bus.run_scripts(
            [self.leases.heartbeat_call(me, ttl)], what="renew group membership", deadline=deadline
        )
        members = self.leases.members(reply)
        wanted = {p for p, member in assign(members, len(self._streams)).items() if member == me}
        async with self._leases_in_use:  # a hand-over's release must not cross this claim
            claimed = sorted(wanted | set(self.states))
            held = set()
            if claimed:
                (reply,) = await bus.run_scripts(
                    [self.leases.claim_call(claimed, me, ttl)],
                    what="renew partition leases",
                    deadline=deadline,
                )
                held = self.leases.held(claimed, reply)
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
        self.stop_reading(stream)
        self._set(partition, None)
        unstarted = self.inbox.take_back(lambda d: d.subscription is self and token_of(d)[0] == stream)
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
            await self._give_back(stream, [token_of(d)[1] for d in unstarted])

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
                self.read_stream(stream)
                return
            held.update(entry_id for entry_id, _ in entries)  # given back at close if not delivered
            counts = {entry["message_id"]: entry["times_delivered"] + 1 for entry in pending}
            await self._deliver(stream, entries, counts)
            after = f"({text(pending[-1]['message_id'])}"

    async def _hand_over(self, partition: int) -> None:
        """Stop reading ``partition``, let what was read of it run and be acked, release its lease."""
        stream = self._streams[partition]
        self.stop_reading(stream)
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
