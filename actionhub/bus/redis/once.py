"""The keys and arguments of `scripts.PUBLISH_ONCE`, sans I/O: shared by the hub's transports
and every client.

Idempotency: message ids are ``<producer>-<counter>``; the script sets bit ``counter % 2**20``
of the producer's bitmap ``Keys.idempotency(producer, counter // 2**20)`` with the write, so a
retry of a publish whose reply was lost (the write happened, the answer did not arrive) finds
the bit set and writes nothing. One bit per message; a bitmap expires `IDEMPOTENCY_TTL` after
its first write, far beyond any retry."""

from __future__ import annotations

from ..dedupe import Dedupe
from .entries import delayed_member
from .keys import Keys

#: Counters per idempotency bitmap (128 KiB when full).
BLOCK = 2**20

#: Milliseconds a bitmap lives after its first bit: a day, far above any publish deadline.
IDEMPOTENCY_TTL = 86_400_000


def counter_of(message_id: str) -> tuple[str, int] | None:
    """(producer, counter) of an id ``<producer>-<counter>``; None for other ids (not covered)."""
    producer, dash, counter = message_id.rpartition("-")
    if not dash or not producer or not counter.isdigit():
        return None
    return producer, int(counter)


def publish_once(
    keys: Keys,
    *,
    target: str,
    topic: str,
    message_id: str,
    raw: bytes,
    delay: float | None = None,
    dedupe: Dedupe | None = None,
    kind: str = "x",
) -> tuple[list[str], list[str | bytes | int | float]]:
    """(KEYS, ARGV) of `PUBLISH_ONCE` writing ``raw`` to stream (kind ``x``) or channel (``p``)
    ``target``."""
    counted = counter_of(message_id)
    bitmap, bit = (
        ("", "")
        if counted is None
        else (
            keys.idempotency(counted[0], counted[1] // BLOCK),
            str(counted[1] % BLOCK),
        )
    )
    dedupe_key = keys.dedupe(topic, dedupe.key) if dedupe is not None else target
    window = str(max(1, round(dedupe.seconds * 1000))) if dedupe is not None else ""
    member = delayed_member(kind, target, "", raw) if delay else b""
    return (
        [
            *(target, keys.delayed, dedupe_key, bitmap or target),
            *(keys.keeps_results(topic), keys.status(message_id)),
        ],
        [raw, message_id, window, bit, delay or 0, member, IDEMPOTENCY_TTL, kind, topic],
    )
