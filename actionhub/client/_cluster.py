"""How the clients' `publish_many` batches in the cluster layout, sans I/O: one batch per topic
and slot (`scripts_cluster.PUBLISH_MANY_ONCE_C` touches one slot), whatever the order of the keys.
The scripts' keys and arguments are the hub's (`once.publish_many_once`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..bus.redis.entries import PUBLISH_BATCH
from ..bus.redis.once import Write
from ..bus.redis.slots import key_slot
from ..message import Message


def slot_batches(
    messages: Sequence[Message], writes: Sequence[Write], size: int = PUBLISH_BATCH
) -> Iterator[tuple[str, list[Write]]]:
    """``writes`` (one per message) in batches of one topic and one slot, at most ``size`` each:
    (topic, batch). A batch keeps the order of its writes, so one key's messages (one partition
    stream) stay in order; batches come in the order of their first write."""
    groups: dict[tuple[str, int], list[Write]] = {}
    for message, write in zip(messages, writes, strict=True):
        groups.setdefault((message.topic, key_slot(write[0])), []).append(write)
    for (topic, _), group in groups.items():
        for start in range(0, len(group), size):
            yield topic, group[start : start + size]
