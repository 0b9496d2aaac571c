"""Partitions of a topic, and which live hub owns which: the building blocks of ordered groups.

A key's partition is ``crc32(key) % partitions`` (`actionhub.bus.protocol.partition_of`), so a
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

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from . import protocol
from .protocol import Keys


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
        self._heartbeat = client.register_script(protocol.HEARTBEAT)
        self._claim = client.register_script(protocol.CLAIM_LEASES)
        self._release = client.register_script(protocol.RELEASE_LEASES)

    def lease_key(self, partition: int) -> str:
        return self.keys.lease(self.topic, self.group, partition)

    def heartbeat(self, member: str, ttl: float) -> list[str]:
        """Say ``member`` is live for ``ttl`` seconds more; the live members, sorted."""
        members = self._heartbeat(keys=[self.members_key], args=[member, max(1, int(ttl * 1000))])
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    def claim(self, partitions: Sequence[int], member: str, ttl: float) -> set[int]:
        """Take or renew the leases of ``partitions`` for ``ttl`` seconds; those ``member``
        holds now (the others are held by other members)."""
        if not partitions:
            return set()
        keys = [self.lease_key(p) for p in partitions]
        held = self._claim(keys=keys, args=[member, max(1, int(ttl * 1000))])
        return {partitions[i - 1] for i in held}

    def release(self, partitions: Sequence[int], member: str) -> int:
        """Give up the leases of ``partitions`` that ``member`` holds; how many it held."""
        if not partitions:
            return 0
        return int(self._release(keys=[self.lease_key(p) for p in partitions], args=[member]))

    def leave(self, member: str, partitions: Sequence[int]) -> None:
        """``member`` stops: its leases of ``partitions`` and its membership end now."""
        self.release(partitions, member)
        self.client.zrem(self.members_key, member)
