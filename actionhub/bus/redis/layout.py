"""The cluster layout of key names, sans I/O: every key a script or transaction touches together
shares one Redis Cluster slot (docs/design/cluster.md §2-3).

A bus chooses `ClusterKeys` through `keys_for` for a ``redis+cluster://`` URL (or
``layout=cluster``); the single-node names (`keys.Keys`) never change.

A fixed set of ``shards`` hash tags, not one per topic: shard k's tag is the first ``"k.n"``
(n = 0, 1, ...) whose slot lies in the k-th ``shards``-th of the slot ring, so the shards spread
evenly over nodes holding contiguous slot ranges. A topic's keys carry its shard's tag (CRC-32 of
the topic modulo ``shards``); partition p of a keyed topic the tag of the shard ``(p + 1) * stride``
further on, so a keyed topic's partitions spread over the nodes.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import attrs

from ...errors import ConfigurationError
from .keys import Keys, partition_of
from .slots import SLOTS, key_slot

if TYPE_CHECKING:
    from .options import RedisOptions

DEFAULT_SHARDS = 64
MIN_SHARDS, MAX_SHARDS = 16, 1024


def check_shards(shards: int) -> int:
    """``shards`` if it is a power of two from 16 to 1024, else a `ConfigurationError`."""
    if not (isinstance(shards, int) and MIN_SHARDS <= shards <= MAX_SHARDS and shards & (shards - 1) == 0):
        raise ConfigurationError(
            f"shards must be a power of two from {MIN_SHARDS} to {MAX_SHARDS}, not {shards!r}"
        )
    return shards


@functools.cache
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of ``shard`` (of ``shards``): ``"k.n"`` for the least n whose slot lies in
    the k-th ``shards``-th of the slot ring. Cached: finding one takes up to ~1 ms."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of {shards}")
    low, high = shard * SLOTS // shards, (shard + 1) * SLOTS // shards
    n = 0
    while not low <= key_slot(f"{shard}.{n}") < high:
        n += 1
    return f"{shard}.{n}"


def topic_shard(topic: str, shards: int) -> int:
    """The shard of a topic's keys: CRC-32 of its UTF-8 bytes modulo ``shards`` (as `partition_of`)."""
    return partition_of(topic, shards)


def stride(shards: int) -> int:
    """How many shards apart consecutive partitions of a topic are: ``2 * floor(shards * 0.309) + 1``,
    odd (so coprime with a power of two: ``shards`` partitions reach every shard once) and near
    ``shards`` / the golden ratio (so any run of partitions spreads evenly around the ring)."""
    return 2 * (shards * 309 // 1000) + 1


def partition_shard(topic: str, partition: int, shards: int) -> int:
    """The shard of one partition stream of a keyed topic (independent of the partition count)."""
    return (topic_shard(topic, shards) + (partition + 1) * stride(shards)) % shards


@attrs.frozen
class ClusterKeys(Keys):
    """Every key name under one prefix, hash-tagged so what is used together shares a slot.

    ``{T}``, the tag of the topic's shard: its stream, dead letters, partition count, progress,
    members, leases, results settings, limits, schedules' states and the dedupe keys of its
    unkeyed messages. ``{Tp}``, the tag of partition p's shard: that partition stream and its
    dedupe keys. Each shard has its delayed set (`delayed_of`). ``{#<id>}``: a message's status
    record and bell (the ``#`` keeps the tag non-empty whatever the id). Untagged, used alone:
    hub snapshots, reply lists, events, the control channel, the layout record.
    """

    shards: int = attrs.field(default=DEFAULT_SHARDS, validator=lambda _, __, value: check_shards(value))

    def __attrs_post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            raise ConfigurationError(
                f"prefix {self.prefix!r} holds a brace: in the cluster layout braces are the hash tags'"
            )

    def _in(self, tag: str, name: str) -> str:
        return f"{self.prefix}{{{tag}}}{name}"

    def _under(self, tag: str, single: str) -> str:
        """The single-layout name ``single``, hash-tagged with ``tag`` right after the prefix."""
        return self._in(tag, single[len(self.prefix) :])

    def _topic_tag(self, topic: str) -> str:
        return shard_tag(topic_shard(topic, self.shards), self.shards)

    def tag_of(self, key: str) -> str:
        """The hash tag of a key of this layout (it comes right after the prefix)."""
        start = len(self.prefix) + 1
        end = key.find("}", start)
        if not key.startswith(f"{self.prefix}{{") or end <= start:
            raise ValueError(f"{key!r} is not a hash-tagged key under {self.prefix!r}")
        return key[start:end]

    def slot_of(self, key: str) -> int:
        """The cluster slot of ``key``."""
        return key_slot(key)

    @property
    def layout_record(self) -> str:
        """What `Keys.layout` holds for data laid out this way: ``cluster:<shards>:1``."""
        return f"cluster:{self.shards}:1"

    def stream(self, topic: str) -> str:
        return self._under(self._topic_tag(topic), super().stream(topic))

    def partition(self, topic: str, partition: int) -> str:
        tag = shard_tag(partition_shard(topic, partition, self.shards), self.shards)
        return self._under(tag, super().partition(topic, partition))

    def partitions(self, topic: str) -> str:
        return self._under(self._topic_tag(topic), super().partitions(topic))

    def dead(self, topic: str) -> str:
        return self._under(self._topic_tag(topic), super().dead(topic))

    @property
    def delayed(self) -> str:
        raise ValueError("the cluster layout has one delayed set per shard: use delayed_of(stream)")

    def delayed_of(self, target: str) -> str:
        """The delayed set in ``target``'s slot: moving a due message there stays one script."""
        return self._in(self.tag_of(target), "delayed")

    def delayed_sets(self) -> tuple[str, ...]:
        return tuple(self._in(shard_tag(shard, self.shards), "delayed") for shard in range(self.shards))

    def progress(self, topic: str, group: str, message_id: str) -> str:
        return self._under(self._topic_tag(topic), super().progress(topic, group, message_id))

    def doorbell(self, consumer: str, near: str | None = None) -> str:
        if near is None:
            raise ValueError(
                "the cluster layout puts a doorbell in the slot of a stream read with it: give one"
            )
        return self._under(self.tag_of(near), super().doorbell(consumer))

    def members(self, topic: str, group: str) -> str:
        return self._under(self._topic_tag(topic), super().members(topic, group))

    def lease(self, topic: str, group: str, partition: int) -> str:
        # the topic's tag, not the partition's: one script claims many partitions' leases
        return self._under(self._topic_tag(topic), super().lease(topic, group, partition))

    def status(self, message_id: str) -> str:
        return self._in(f"#{message_id}", "status")

    def status_bell(self, message_id: str) -> str:
        return self._in(f"#{message_id}", "bell")

    def keeps_results(self, topic: str) -> str:
        return self._under(self._topic_tag(topic), super().keeps_results(topic))

    def results_group(self, topic: str) -> str:
        return self._under(self._topic_tag(topic), super().results_group(topic))

    def dedupe(self, topic: str, key: str, target: str | None = None) -> str:
        tag = self._topic_tag(topic) if target is None else self.tag_of(target)
        return self._under(tag, super().dedupe(topic, key))

    def durable_mark(self, topic: str | None = None, target: str | None = None) -> str:
        # on the node of the write it follows: a WAIT counts the writes of its own connection
        if target is not None:
            tag = self.tag_of(target)
        elif topic is not None:
            tag = self._topic_tag(topic)
        else:
            raise ValueError(
                "the cluster layout puts a mark in the slot of the stream it covers: give the topic or stream"
            )
        return self._under(tag, super().durable_mark(topic))

    def schedule(self, name: str, topic: str | None = None) -> str:
        if topic is None:
            raise ValueError(
                "the cluster layout keeps a schedule's state in its topic's slot: give the topic"
            )
        return self._under(self._topic_tag(topic), super().schedule(name))

    @property
    def schedules(self) -> str:
        return self._in("*", super().schedules[len(self.prefix) :])

    def schedule_name(self, key: str) -> str:
        return key[len(self.prefix) + len(self.tag_of(key)) + len("{}schedule:") :]

    def limits(self, topic: str, group: str) -> tuple[str, str, str, str]:
        tag = self._topic_tag(topic)
        rate, slots, waiting, spec = (self._under(tag, key) for key in super().limits(topic, group))
        return rate, slots, waiting, spec

    def limit_reply(self, topic: str, group: str, hub: str) -> str:
        return self._under(self._topic_tag(topic), super().limit_reply(topic, group, hub))


def check_layout(client: Any, keys: Keys) -> None:
    """Refuse (`ConfigurationError`) to use data laid out otherwise under the same prefix: the
    cluster layout records itself (``<prefix>layout`` = `ClusterKeys.layout_record`, written once);
    the single layout writes nothing, as before, and refuses a prefix that holds such a record.
    ``client``: a redis-py client (blocking: run it in a thread)."""
    wanted = keys.layout_record if isinstance(keys, ClusterKeys) else None
    if wanted is not None:
        client.set(keys.layout, wanted, nx=True)
    (found,) = client.mget([keys.layout])  # MGET: the README's least-privilege user has it
    found = None if found is None else found.decode()
    if found != wanted:
        raise ConfigurationError(
            f"the data under prefix {keys.prefix!r} is laid out as {found or 'single'!r}, this bus "
            f"as {wanted or 'single'!r}: the URL's options (redis+cluster://, layout=, shards=) "
            "must match the deployment's (changing them needs a drain: docs/scaling.md)"
        )


def keys_for(options: RedisOptions) -> Keys:
    """The key names a bus with ``options`` uses: `Keys`, or `ClusterKeys` in the cluster layout."""
    if options.layout == "cluster":
        return ClusterKeys(options.prefix, shards=options.shards or DEFAULT_SHARDS)
    return Keys(options.prefix)
