"""Key names and partition routing: where actionhub keeps what in Redis, sans I/O. The one
source of truth for key names, shared by the hub's transports and every client."""

from __future__ import annotations

import secrets
import zlib

import attrs

from ...errors import ConfigurationError

#: Partitions of a topic whose first ordered group or keyed publisher did not say, and the most.
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 1024


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: CRC-32 (as in zlib, Java's CRC32, Go's hash/crc32) of its UTF-8
    bytes, modulo ``partitions``."""
    return zlib.crc32(key.encode()) % partitions


@attrs.frozen
class Keys:
    """Every key name under one prefix (``actionhub:`` unless the URL says ``?prefix=``)."""

    prefix: str = "actionhub:"

    def stream(self, topic: str) -> str:
        """A topic's stream: unkeyed messages (and pub/sub: its channel)."""
        return f"{self.prefix}{topic}"

    def partition(self, topic: str, partition: int) -> str:
        """One partition stream of a keyed topic."""
        return f"{self.prefix}{topic}:p{partition}"

    def partitions(self, topic: str) -> str:
        """A topic's partition count, set once (SET NX) by its first ordered group or keyed publisher."""
        return f"{self.prefix}partitions:{topic}"

    def keyed_stream(self, topic: str, key: str, partitions: int) -> str:
        """Where a message with ordering ``key`` goes."""
        return self.partition(topic, partition_of(key, partitions))

    def dead(self, topic: str) -> str:
        return f"{self.prefix}dead:{topic}"

    @property
    def delayed(self) -> str:
        """The delayed set of every topic of the prefix (scored by the Redis clock)."""
        return f"{self.prefix}delayed"

    def delayed_of(self, target: str) -> str:
        """The delayed set a message bound for stream ``target`` waits in (here: the one set)."""
        return self.delayed

    def delayed_sets(self) -> tuple[str, ...]:
        """Every delayed set of the prefix, for the hubs that move due messages."""
        return (self.delayed,)

    def progress(self, topic: str, group: str, message_id: str) -> str:
        """A message's checkpoint in one consumer group."""
        return f"{self.prefix}progress:{topic}:{group}:{message_id}"

    @property
    def reply_prefix(self) -> str:
        return f"{self.prefix}reply:"

    def new_reply(self) -> str:
        """A fresh reply list: a requester BLPOPs it, the action LPUSHes there."""
        return f"{self.reply_prefix}{secrets.token_hex(12)}"

    def hub(self, name: str) -> str:
        """A live hub's announced snapshot (it expires)."""
        return f"{self.prefix}hub:{name}"

    @property
    def hubs(self) -> str:
        """The SCAN pattern of every announced hub."""
        return f"{self.prefix}hub:*"

    @property
    def control(self) -> str:
        """The pub/sub channel of operator commands."""
        return f"{self.prefix}control"

    def events(self, stream: str) -> str:
        """A stream of events, such as ``escalations``."""
        return f"{self.prefix}{stream}"

    def doorbell(self, consumer: str, near: str | None = None) -> str:
        """A hub's doorbell: one entry, rung to make its reader ask Redis again (it expires).
        ``near``: a stream read with it (the cluster layout puts the doorbell in its slot)."""
        return f"{self.prefix}doorbell:{consumer}"

    def members(self, topic: str, group: str) -> str:
        """The live hubs of an ordered group (a sorted set scored by their lapse time)."""
        return f"{self.prefix}members:{topic}:{group}"

    def lease(self, topic: str, group: str, partition: int) -> str:
        """Who reads one partition of an ordered group."""
        return f"{self.prefix}lease:{topic}:{group}:{partition}"

    def status(self, message_id: str) -> str:
        """A message's status record (JSON; pending until a group that keeps results finishes it)."""
        return f"{self.prefix}status:{message_id}"

    def status_bell(self, message_id: str) -> str:
        """Rung (one entry, short-lived) when a message's status becomes final: waiters block on it."""
        return f"{self.prefix}bell:{message_id}"

    def keeps_results(self, topic: str) -> str:
        """Set (to the seconds kept) while a group of ``topic`` keeps results: publishes then
        write a pending status record."""
        return f"{self.prefix}keep:{topic}"

    def results_group(self, topic: str) -> str:
        """The one consumer group of ``topic`` that keeps results (refreshed as `keeps_results`):
        two would write over each other's records of the same message."""
        return f"{self.prefix}keepgroup:{topic}"

    def dedupe(self, topic: str, key: str, target: str | None = None) -> str:
        """The first message id published under ``key`` to ``topic`` (it expires with the
        window). ``#`` ends the topic: no topic holds one, so no (topic, key) pair aliases another.
        ``target``: the stream published to (the cluster layout puts the key in its slot)."""
        return f"{self.prefix}dedupe:{topic}#{key}"

    def durable_mark(self, topic: str | None = None, target: str | None = None) -> str:
        """Written (``SET``, short-lived) before a ``WAIT`` that confirms a script's write to
        ``topic``, so the ``WAIT`` covers it even if the script wrote nothing, or (None) before
        the one ``WAIT`` of a round of confirmations (redis/replication.py). ``#`` starts the name:
        no topic holds one, so no mark is ever a topic's stream. ``target``: the stream written
        (the cluster layout puts the mark in its slot)."""
        return f"{self.prefix}#mark" if topic is None else f"{self.prefix}#mark:{topic}"

    def schedule(self, name: str, topic: str | None = None) -> str:
        """A schedule's state: ``<digest>:<last>:<fired>``, its definition's digest, the last tick
        fired or passed over and the last one published (ms since the epoch; see `ScheduleState`).
        ``topic``: the topic it publishes to (the cluster layout puts the state in its slot)."""
        return f"{self.prefix}schedule:{name}"

    @property
    def schedules(self) -> str:
        """The SCAN pattern of every schedule's state."""
        return f"{self.prefix}schedule:*"

    def schedule_name(self, key: str) -> str:
        """The schedule whose state `schedule` keeps at ``key``."""
        return key[len(f"{self.prefix}schedule:") :]

    def limits(self, topic: str, group: str) -> tuple[str, str, str, str]:
        """A consumer group's limits, shared by its hubs: its rate (GCRA's next due time, in
        microseconds of the Redis clock), its concurrency slots (a sorted set of slot ->
        lapse time, ms), the hubs waiting for a slot (hub -> when they last asked, ms) and the
        limits the last hub to ask had (`LimitSpec.describe`)."""
        base = f"{self.prefix}limit:{topic}:{group}"
        return f"{base}:rate", f"{base}:slots", f"{base}:waiting", f"{base}:spec"

    def limit_reply(self, topic: str, group: str, hub: str) -> str:
        """The last reply `scripts.LIMIT` gave ``hub`` for the group's limits, with its call
        number (short-lived: a resent call finds it and changes nothing)."""
        return f"{self.prefix}limit:{topic}:{group}:reply:{hub}"

    @property
    def layout(self) -> str:
        """Which key layout the prefix's data uses: absent for this one (the single-node layout of
        every deployment so far); written by the cluster layout (`layout.ClusterKeys`)."""
        return f"{self.prefix}layout"


def partition_count(key: str, raw: bytes | str | None) -> int | None:
    """The partition count stored at ``key`` (`Keys.partitions`), None if there is none yet."""
    if raw is None:
        return None
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_PARTITIONS:
        raise ConfigurationError(f"{key} holds {raw!r}, not a partition count from 1 to {MAX_PARTITIONS}")
    return count
