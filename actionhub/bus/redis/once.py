"""Publishes written once, sans I/O: the keys and arguments of `scripts.PUBLISH_ONCE` and
`scripts.PUBLISH_MANY_ONCE`, and what a publisher knows of the topics that keep results; shared by
the hub's transports and every client.

A plain publish is a bare ``XADD``, as fast as it ever was. Idempotency costs only a resend:
when the connection breaks or times out after a publish was sent (Redis may have run it, its reply
lost), the publisher sends the script instead, with the seconds since its first attempt
(`look_back`): it looks for the message among the stream's entries added since then (an entry
starts with ``{"id":"<id>",``: `entry_prefix`) and writes only if it is not there. The trim never
removes entries younger than `trim_guard`, longer than any resend, so the first attempt's entry
is there to be found. The resends: the hub's `Publishing.send_once` (for ``publish_timeout``)
and the clients' drivers (`actionhub.client._ops.RETRY_DELAYS`; redis-py's own retries are off).

A deduplicated, delayed or kept publish (a topic whose group keeps results) runs the script from
the first attempt; its resend finds the dedupe key, the delayed member or the pending status
record the first attempt wrote, or its entry.

In the cluster layout (`ClusterKeys`) a message's status record is in a slot of its own: the
publish runs `scripts_cluster.PUBLISH_ONCE_C` (only if deduplicated, delayed or resent) or
`PUBLISH_MANY_ONCE_C` (per topic and slot), which write no status, and a kept topic's pending
records follow once the publish succeeded (`pending`: NX, so never over a consumer's later
record). A crash between leaves the status ``unknown`` until the run starts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import orjson

from ...message import Message
from ..dedupe import Dedupe
from . import scripts, scripts_cluster
from .entries import PUBLISH_BATCH, delayed_member
from .keys import Keys
from .layout import ClusterKeys

Args = list[str | bytes | int | float]

#: One message of a batch: (stream or channel, message id, entry).
Write = tuple[str, str, bytes]

#: Seconds a resend looks back beyond the time its publisher measured since the first attempt:
#: for the round trips, the clocks' rates and a millisecond's rounding. A resend delayed in the
#: network longer than this could miss its first attempt's entry.
SCAN_MARGIN = 1.0

#: Seconds the trim keeps entries beyond a publisher's ``publish_timeout`` (the hub's last retry
#: starts up to one backoff step, 5 s, after it, and looks back `SCAN_MARGIN` more).
TRIM_SLACK = 10.0

#: Seconds a publisher trusts what it learnt of a topic keeping results (`KeptTopics`).
KEPT_RECHECK = 5.0


def look_back(elapsed: float) -> int:
    """Milliseconds a resend looks back, ``elapsed`` seconds after its first attempt was sent."""
    return int((max(elapsed, 0.0) + SCAN_MARGIN) * 1000) + 1


def trim_guard(publish_timeout: float) -> int:
    """Milliseconds of newest entries the trim leaves in every stream: longer than any resend."""
    return int((publish_timeout + TRIM_SLACK) * 1000)


def entry_prefix(message_id: str) -> bytes:
    """How a stream entry of ``message_id`` starts (`Message.envelope` puts the id first)."""
    return b'{"id":' + orjson.dumps(message_id) + b","


def publish_script(keys: Keys) -> str:
    """The source of the script `publish_once` builds the call of, for ``keys``'s layout."""
    return scripts_cluster.PUBLISH_ONCE_C if isinstance(keys, ClusterKeys) else scripts.PUBLISH_ONCE


def publish_many_script(keys: Keys) -> str:
    """The source of the script `publish_many_once` builds the call of, for ``keys``'s layout."""
    return scripts_cluster.PUBLISH_MANY_ONCE_C if isinstance(keys, ClusterKeys) else scripts.PUBLISH_MANY_ONCE


def writes_status(keys: Keys) -> bool:
    """Whether ``keys``'s publish scripts write the pending status records themselves (the single
    layout); else the publisher runs `pending` after the publish."""
    return not isinstance(keys, ClusterKeys)


def publish_once(
    keys: Keys,
    back: int = 0,
    *,
    target: str,
    topic: str,
    message_id: str,
    raw: bytes,
    kept: bool = True,
    delay: float | None = None,
    dedupe: Dedupe | None = None,
    kind: str = "x",
) -> tuple[list[str], Args]:
    """(KEYS, ARGV) of `PUBLISH_ONCE` writing ``raw`` to stream (kind ``x``) or channel (``p``)
    ``target``; ``back``: 0 for a first attempt, else a resend's `look_back`; ``kept``: the topic
    may keep results (False: the publisher knows it does not, so no pending record is written).
    In the cluster layout: of `PUBLISH_ONCE_C` (``kept`` is then `pending`'s business)."""
    window = 0 if dedupe is None else max(1, round(dedupe.seconds * 1000))
    if isinstance(keys, ClusterKeys):
        dedupe_key = target if dedupe is None else keys.dedupe(topic, dedupe.key, target=target)
        member = delayed_member(kind, target, "", raw) if delay else b""
        prefix = entry_prefix(message_id) if back else b""
        args: Args = [raw, message_id, kind, window, back, prefix, delay or 0, member]
        return [target, dedupe_key, keys.delayed_of(target) if delay else target], args
    script_keys = [target, target if dedupe is None else keys.dedupe(topic, dedupe.key)]
    args = [raw, message_id, kind, topic if kept else "", window]
    if kept or back or delay:
        script_keys += (keys.keeps_results(topic), keys.status(message_id))
        args += (back, entry_prefix(message_id) if back else b"")
        if delay:
            script_keys.append(keys.delayed_of(target))
            args += (delay, delayed_member(kind, target, "", raw))
    return script_keys, args


def publish_many_once(
    keys: Keys,
    back: int = 0,
    *,
    topic: str,
    writes: Sequence[Write],
    kept: bool,
    kind: str = "x",
) -> tuple[list[str], Args]:
    """(KEYS, ARGV) of `PUBLISH_MANY_ONCE` writing each ``(target, message id, raw)`` of ``writes``
    (all of ``topic``) in order; ``kept``: write pending status records (the topic keeps results);
    ``back``: as for `publish_once` (a resend looks for the batch's first message). In the
    cluster layout: of `PUBLISH_MANY_ONCE_C`, ``writes`` all in one slot (`batches` with its
    ``slot``), ``kept`` then `pending`'s business."""
    prefix = entry_prefix(writes[0][1]) if back else b""
    if isinstance(keys, ClusterKeys):
        return [target for target, _, _ in writes], [kind, back, prefix, *(raw for _, _, raw in writes)]
    script_keys = [keys.keeps_results(topic)]
    if kept:
        for target, message_id, _ in writes:
            script_keys += (target, keys.status(message_id))
    else:
        script_keys += (target for target, _, _ in writes)
    args: Args = [kind, topic, "1" if kept else "0", back, prefix]
    args += (raw for _, _, raw in writes)
    return script_keys, args


def pending(keys: Keys, topic: str, message_id: str, keep: float) -> tuple[list[str], Args]:
    """(KEYS, ARGV) of `scripts_cluster.PENDING`: the pending status record of ``message_id``,
    published to ``topic``, whose group keeps results for ``keep`` seconds (cluster layout)."""
    return [keys.status(message_id)], [topic, repr(float(keep))]


def batches(
    messages: Sequence[Message],
    writes: Sequence[Write],
    size: int = PUBLISH_BATCH,
    slot: Callable[[str], int] | None = None,
) -> Iterator[tuple[str, list[Write]]]:
    """``writes`` (one per message) in batches of one topic, at most ``size`` each: (topic, batch);
    runs of one topic's messages, in order. ``slot`` (the cluster layout: `slots.key_slot`, for
    the hub and the clients alike): batches of one topic and one slot of their targets
    (`scripts_cluster.PUBLISH_MANY_ONCE_C` touches one), whatever the order of the keys; each
    keeps the order of its writes (one key's messages, one partition stream, stay in order) and
    they come in the order of their first write."""
    if slot is not None:
        groups: dict[tuple[str, int], list[Write]] = {}
        for message, write in zip(messages, writes, strict=True):
            groups.setdefault((message.topic, slot(write[0])), []).append(write)
        for (topic, _), group in groups.items():
            for start in range(0, len(group), size):
                yield topic, group[start : start + size]
        return
    start = 0
    while start < len(writes):
        topic, end = messages[start].topic, start + 1
        while end < len(writes) and end - start < size and messages[end].topic == topic:
            end += 1
        yield topic, list(writes[start:end])
        start = end


class KeptTopics:
    """What a publisher knows of the topics that keep results (`Keys.keeps_results` set: a group
    has ``keep_result``): a publish to such a topic runs `PUBLISH_ONCE`, which writes its pending
    status record. Each answer is trusted for `KEPT_RECHECK` seconds, then read again (one
    ``GET`` per topic per interval): a topic whose first keeping group started meanwhile gets no
    pending records from this publisher until then (its status reads ``unknown`` until the run
    starts). Thread-safe enough for the blocking client: a race costs one more GET."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._known: dict[str, tuple[bool, float]] = {}  # topic -> (kept, trusted until)
        self._seconds: dict[str, float] = {}  # topic -> the seconds its group keeps results, if known

    def kept(self, topic: str) -> bool | None:
        """Whether ``topic`` keeps results; None: unknown or stale (read `Keys.keeps_results`
        and `learn` it)."""
        known = self._known.get(topic)
        if known is None or known[1] <= self._clock():
            return None
        return known[0]

    def learn(self, topic: str, kept: bool, seconds: float | None = None) -> bool:
        """Record what was read (or, on a hub, that one of its groups keeps ``topic``); ``kept``.
        ``seconds``: how long the group keeps results (`Keys.keeps_results`'s value), if known."""
        self._known[topic] = (kept, self._clock() + KEPT_RECHECK)
        if seconds is not None:
            self._seconds[topic] = seconds
        return kept

    def seconds(self, topic: str) -> float:
        """The seconds ``topic``'s group keeps results, as last learnt (0 if never: its pending
        records then live a day, as every record does beyond its results)."""
        return self._seconds.get(topic, 0.0)
