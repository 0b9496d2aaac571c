"""The keys and arguments of `scripts.PUBLISH_ONCE` and `scripts.PUBLISH_MANY_ONCE`, sans I/O:
shared by the hub's transports and every client.

Idempotency: message ids are ``<producer>-<counter>`` (`actionhub.bus.dedupe.MessageIds`); the
script sets bit ``counter % 2**20`` of the producer's bitmap ``Keys.idempotency(producer,
counter // 2**20)`` with the write, so a retry of a publish whose reply was lost (the write
happened, the answer did not arrive) finds the bit set and writes nothing. The retries that
resend the same arguments: the hub's `RedisBusBase.call_async` (for ``publish_timeout``) and the
clients' drivers (`actionhub.client._ops.RETRY_DELAYS`; redis-py's own retries are off). One bit
per message; a bitmap lives `idempotency_ttl` after its last write, longer than any of them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ...message import Message
from ..dedupe import Dedupe
from .entries import PUBLISH_BATCH, delayed_member
from .keys import Keys

#: Counters per idempotency bitmap (128 KiB when full).
BLOCK = 2**20

#: The shortest life of a bitmap after its last write, in seconds.
MIN_IDEMPOTENCY_TTL = 600.0

Args = list[str | bytes | int | float]

#: One message of a batch: (stream or channel, message id, entry).
Write = tuple[str, str, bytes]


def idempotency_ttl(publish_timeout: float) -> int:
    """Milliseconds a bitmap lives after its last write: well past the longest retry of a
    publish (the hub's ``publish_timeout``; a client's three resends, each waiting at most its
    socket timeout, within a minute), yet short enough that a producer writing 50,000 messages
    a second keeps a few MB of bitmaps, not a day's."""
    return int(max(MIN_IDEMPOTENCY_TTL, 2 * publish_timeout) * 1000)


def counter_of(message_id: str) -> tuple[str, int] | None:
    """(producer, counter) of an id ``<producer>-<counter>``; None for other ids (not covered)."""
    producer, dash, counter = message_id.rpartition("-")
    if not dash or not producer or not counter.isdigit():
        return None
    return producer, int(counter)


def _bit(keys: Keys, message_id: str) -> tuple[str, str]:
    """(bitmap key, bit) of ``message_id``; ("", "") if it is not a counted id."""
    counted = counter_of(message_id)
    if counted is None:
        return "", ""
    producer, counter = counted
    return keys.idempotency(producer, counter // BLOCK), str(counter % BLOCK)


def publish_once(
    keys: Keys,
    *,
    target: str,
    topic: str,
    message_id: str,
    raw: bytes,
    ttl: int,
    delay: float | None = None,
    dedupe: Dedupe | None = None,
    kind: str = "x",
) -> tuple[list[str], Args]:
    """(KEYS, ARGV) of `PUBLISH_ONCE` writing ``raw`` to stream (kind ``x``) or channel (``p``)
    ``target``; ``ttl``: `idempotency_ttl`. A plain publish sends no delay nor dedupe arguments."""
    bitmap, bit = _bit(keys, message_id)
    script_keys = [target, bitmap or target, keys.keeps_results(topic), keys.status(message_id)]
    args: Args = [raw, message_id, bit, ttl, kind, topic]
    if delay or dedupe is not None:
        script_keys.append(keys.delayed)
        args += (delay or 0, delayed_member(kind, target, "", raw) if delay else b"")
        if dedupe is not None:
            script_keys.append(keys.dedupe(topic, dedupe.key))
            args.append(max(1, round(dedupe.seconds * 1000)))
    return script_keys, args


def publish_many_once(
    keys: Keys,
    *,
    topic: str,
    writes: Sequence[Write],
    ttl: int,
    kind: str = "x",
) -> tuple[list[str], Args]:
    """(KEYS, ARGV) of `PUBLISH_MANY_ONCE` writing each ``(target, message id, raw)`` of
    ``writes`` (all of ``topic``) in order."""
    script_keys = [keys.keeps_results(topic)]
    args: Args = [ttl, kind, topic]
    for target, message_id, raw in writes:
        bitmap, bit = _bit(keys, message_id)
        script_keys += (target, bitmap or target, keys.status(message_id))
        args += (raw, message_id, bit)
    return script_keys, args


def batches(
    messages: Sequence[Message], writes: Sequence[Write], size: int = PUBLISH_BATCH
) -> Iterator[tuple[str, list[Write]]]:
    """``writes`` (one per message) in batches of one topic, at most ``size`` each: (topic, batch)."""
    start = 0
    while start < len(writes):
        topic, end = messages[start].topic, start + 1
        while end < len(writes) and end - start < size and messages[end].topic == topic:
            end += 1
        yield topic, list(writes[start:end])
        start = end
