"""The clients' publishes in the cluster layout, sans I/O: the keys and arguments of
`scripts_cluster.PUBLISH_ONCE_C`, `PUBLISH_MANY_ONCE_C` and `PENDING` (docs/design/cluster.md §4),
the batches of one slot each that `publish_many` writes, and what a publisher knows of the seconds
a topic keeps results (`PENDING` takes them: its record lives in the message's own slot).

The entries, members and key names are the single layout's (`once.publish_once`) in the cluster
layout's slots: a hub and a client write the same bytes to the same keys."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..bus.dedupe import Dedupe
from ..bus.redis.entries import PUBLISH_BATCH, delayed_member
from ..bus.redis.layout import ClusterKeys
from ..bus.redis.once import Args, Write, entry_prefix
from ..bus.redis.slots import key_slot
from ..message import Message


def publish_once_c(
    keys: ClusterKeys,
    back: int = 0,
    *,
    target: str,
    topic: str,
    message_id: str,
    raw: bytes,
    delay: float | None = None,
    dedupe: Dedupe | None = None,
    kind: str = "x",
) -> tuple[list[str], Args]:
    """(KEYS, ARGV) of `PUBLISH_ONCE_C` writing ``raw`` to stream (kind ``x``) or channel (``p``)
    ``target``; ``back``: 0 for a first attempt, else a resend's `once.look_back`. The dedupe key
    is under the target's tag (a keyed message's: its partition's, §4), the delayed set the
    target's slot's."""
    window = 0 if dedupe is None else max(1, round(dedupe.seconds * 1000))
    dedupe_key = target if dedupe is None else keys.dedupe(topic, dedupe.key, target=target)
    delayed = keys.delayed_of(target) if delay else target
    member = delayed_member(kind, target, "", raw) if delay else b""
    prefix = entry_prefix(message_id) if back else b""
    args: Args = [raw, message_id, kind, window, back, prefix, delay or 0, member]
    return [target, dedupe_key, delayed], args


def publish_many_once_c(
    keys: ClusterKeys, back: int = 0, *, writes: Sequence[Write], kind: str = "x"
) -> tuple[list[str], Args]:
    """(KEYS, ARGV) of `PUBLISH_MANY_ONCE_C` writing each ``(target, message id, raw)`` of
    ``writes`` (one topic, one slot: `slot_batches`) in order; ``back``: as for `publish_once_c`
    (a resend looks for the batch's first message)."""
    prefix = entry_prefix(writes[0][1]) if back else b""
    args: Args = [kind, back, prefix]
    args += (raw for _, _, raw in writes)
    return [target for target, _, _ in writes], args


def pending(
    keys: ClusterKeys, message_id: str, topic: str, keep: bytes
) -> tuple[tuple[str], tuple[str, bytes]]:
    """(KEYS, ARGV) of `PENDING`: the pending record of ``message_id``, published to ``topic``
    whose group keeps results ``keep`` seconds (the value of `Keys.keeps_results`)."""
    return (keys.status(message_id),), (topic, keep)


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
