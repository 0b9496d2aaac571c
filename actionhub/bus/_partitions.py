"""Partitions of a topic, and which live hub owns which: the building blocks of ordered groups.

A key's partition is ``crc32(key) % partitions``, so a publisher in any language can compute it.
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
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

#: register ``ARGV[1]`` as live for ``ARGV[2]`` ms (Redis clock), drop lapsed members, list the rest
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #lapsed > 0 then redis.call('ZREM', KEYS[1], unpack(lapsed)) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

#: take each lease of ``KEYS`` for ``ARGV[1]`` (or renew it if already held) for ``ARGV[2]`` ms;
#: returns the (1-based) positions of the keys it holds afterwards
_CLAIM = """
local held = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('MGET', key)[1]
  if holder == false or holder == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[#held + 1] = i
  end
end
return held
"""

#: drop each lease of ``KEYS`` that ``ARGV[1]`` holds; how many it dropped
_RELEASE = """
local dropped = 0
for _, key in ipairs(KEYS) do
  if redis.call('MGET', key)[1] == ARGV[1] then dropped = dropped + redis.call('DEL', key) end
end
return dropped
"""


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: CRC-32 (as in zlib, Java's CRC32, Go's hash/crc32) of its UTF-8
    bytes, modulo ``partitions``."""
    return zlib.crc32(key.encode()) % partitions


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

    def __init__(self, client: Any, prefix: str, topic: str, group: str) -> None:
        self.client = client
        self.members_key = f"{prefix}members:{topic}:{group}"
        self._lease_prefix = f"{prefix}lease:{topic}:{group}:"
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def lease_key(self, partition: int) -> str:
        return f"{self._lease_prefix}{partition}"

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
