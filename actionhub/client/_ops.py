"""What every client does, sans I/O: each operation is a generator that yields the Redis calls it
needs and is sent their replies; a client flavour (blocking, asyncio, trio) only runs the calls.
Key names, scripts and routing come from `actionhub.bus.redis` (keys, scripts, entries), the envelope from
`actionhub.message`: the hub's bus and the clients write the same bytes to the same keys."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from .. import tracing
from ..bus.base import DeadLetter, check_durable, no_replicas
from ..bus.dedupe import Dedupe, MessageIds, check_dedupe
from ..bus.redis import entries, once, results, scripts_cluster, slots
from ..bus.redis.durable import NO_PUBSUB, Confirm, publish_confirm
from ..bus.redis.keys import DEFAULT_PARTITIONS, partition_count
from ..bus.redis.layout import ClusterKeys, check_layout, keys_for
from ..bus.redis.options import RedisOptions
from ..bus.statuses import outcome
from ..errors import ConfigurationError, MalformedMessage
from ..inspect import CommandAnswer, HubSnapshot, command_document, decode_answer, snapshots_from
from ..message import Message, check_key, check_topic, decode
from ..payloads import to_json
from ..results import MessageStatus
from ..results import decode as decode_status
from ._calls import (
    RETRY_DELAYS,
    Call,
    Command,
    Once,
    Op,
    Pipeline,
    Scan,
    Script,
    Transaction,
    abandon,
    confirmed_call,
    evalsha,
    resend_of,
    resendable,
    script_call,
    sha_of,
)

__all__ = [
    "RETRY_DELAYS",
    "Call",
    "Command",
    "Once",
    "Op",
    "Operations",
    "Pipeline",
    "Scan",
    "Script",
    "Transaction",
    "abandon",
    "confirmed_call",
    "evalsha",
    "resendable",
    "sha_of",
]


class Operations:
    """The operations of one client: its key names, options and what it learnt (partition
    counts never change once set, so they are read once)."""

    def __init__(self, options: RedisOptions) -> None:
        self.options = options
        self.keys = keys_for(options)
        self._cluster_keys = self.keys if isinstance(self.keys, ClusterKeys) else None
        #: the cluster layout: every script and transaction touches one slot (docs/design/cluster.md)
        self.cluster = self._cluster_keys is not None
        self.pubsub = options.mode == "pubsub"
        #: the asyncio client does not send a write and its WAIT to one cluster node (yet)
        self.no_cluster_durable = False
        #: the layout of the data under the prefix was found to be this client's (`check_layout`)
        self.layout_checked = False
        self._partitions: dict[str, int] = {}
        self._ids = MessageIds()  # thread-safe, and fork-safe (a resend looks for its unique id)
        self._kept = once.KeptTopics()
        self._keep_for: dict[str, float] = {}  # topic -> seconds it keeps results, as read

    def check_layout(self) -> Op[None]:
        """Refuse (`ConfigurationError`) data laid out otherwise under the prefix, as a hub does
        (`layout.check_layout`: the cluster layout records itself once); a driver runs it before
        its first call."""
        keys = self.keys
        if isinstance(keys, ClusterKeys):
            yield Command(("SET", keys.layout, keys.layout_record, "NX"))
        (found,) = yield Command(("MGET", keys.layout))
        check_layout(_Read(found), keys)
        self.layout_checked = True

    def _transaction(
        self, commands: Sequence[tuple[Any, ...]], confirm: Confirm | None = None
    ) -> Transaction:
        """A `Transaction` of ``commands``; in the cluster layout they must share a slot (a
        `BusError` here, never a CROSSSLOT from Redis: keys of two slots in one is a bug)."""
        if self.cluster:
            slots.slot_of(*commands)
        return Transaction(tuple(commands), confirm)

    def check_replicas(self) -> None:
        """Refuse the URL's ``durable`` if this client cannot confirm it (`ConfigurationError`)."""
        self._replicas(None)

    def _replicas(self, durable: int | None) -> int:
        """How many replicas confirm a publish: ``durable`` (None: the URL's)."""
        durable = check_durable(durable)
        count = self.options.durable if durable is None else durable
        if self.no_cluster_durable and count:
            _no_cluster_durable(count)
        if self.pubsub:
            no_replicas(count, NO_PUBSUB)
        return count

    def _confirm(self, topic: str, replicas: int, target: str) -> Confirm | None:
        """How a publish to ``target`` is confirmed (the cluster layout marks it in its slot)."""
        return publish_confirm(self.keys, topic, replicas, target if self.cluster else None)

    def _message(
        self,
        topic: str,
        payload: object,
        headers: dict[str, str] | None,
        key: str | None,
        reply_to: str | None = None,
    ) -> Message:
        return Message(
            topic=check_topic(topic),
            payload=to_json(payload),
            id=self._ids(),
            headers=dict(headers or {}),
            reply_to=reply_to,
            key=check_key(key),
        )

    def _stream(self, message: Message) -> Op[str]:
        """Where ``message`` goes: its key's partition stream (the topic's count is set if it
        has none yet, as the hub does), else the topic's stream (or pub/sub channel)."""
        topic, key = message.topic, message.key
        if key is None or self.pubsub:
            return self.keys.stream(topic)
        count = self._partitions.get(topic)
        if count is None:
            name = self.keys.partitions(topic)
            _, (raw,) = yield self._transaction((("SET", name, DEFAULT_PARTITIONS, "NX"), ("MGET", name)))
            count = partition_count(name, raw)
            assert count is not None
            self._partitions[topic] = count
        return self.keys.keyed_stream(topic, key, count)

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        topic: str,
        payload: object,
        *,
        headers: dict[str, str] | None = None,
        delay: float | None = None,
        key: str | None = None,
        reply_to: str | None = None,
        dedupe_key: str | None = None,
        dedupe_for: float | None = None,
        durable: int | None = None,
    ) -> Op[str]:
        if delay is not None and not delay >= 0:
            raise ValueError(f"delay must be a number of seconds >= 0, not {delay!r}")
        dedupe = None if dedupe_key is None and dedupe_for is None else check_dedupe(dedupe_key, dedupe_for)
        message = self._message(topic, payload, headers, key, reply_to)
        replicas = self._replicas(durable)
        span = tracing.start_send(topic, message.id, reply_to=reply_to, delay=delay, headers=message.headers)
        if span is None:
            return (yield from self._write(message, delay, dedupe, replicas))
        message = attrs.evolve(message, headers=tracing.headers_with_context(span, message.headers))
        return (yield from tracing.sent_op(span, self._write(message, delay, dedupe, replicas)))

    def _write(self, message: Message, delay: float | None, dedupe: Dedupe | None, replicas: int) -> Op[str]:
        raw = entries.encode_entry(message, self.options.max_message_bytes)
        stream = yield from self._stream(message)
        topic = message.topic
        kept = yield from self._kept_topic(topic)
        source = once.publish_script(self.keys)
        build = functools.partial(
            once.publish_once, self.keys, target=stream, topic=topic, message_id=message.id, raw=raw,
            kept=kept, delay=delay, dedupe=dedupe, kind="p" if self.pubsub else "x",
        )  # fmt: skip
        # the cluster layout's script writes no status: `PENDING` follows the publish
        written, confirm = message.id, self._confirm(topic, replicas, stream)
        if delay or dedupe is not None or (kept and not self.cluster):  # the hub's script at once
            first = script_call(source, build, 0)
            reply = yield Once(first, resend_of(source, build), confirm)
            written = reply.decode() if isinstance(reply, bytes) else str(reply)
        elif self.pubsub:  # not resent: at most once, as pub/sub delivers
            yield Command(("PUBLISH", stream, raw))
        else:  # a bare XADD; its resend writes only if the XADD did not (once.py)
            xadd = Command(("XADD", stream, "*", "message", raw))
            yield Once(xadd, resend_of(source, build), confirm)
        if self.cluster and kept and written == message.id:  # not for a duplicate
            yield from self._pending(topic, [message.id])
        return written

    def _kept_topic(self, topic: str) -> Op[bool]:
        """Whether ``topic`` keeps results, as far as this publisher knows (once.KeptTopics)."""
        kept = False if self.pubsub else self._kept.kept(topic)
        if kept is None:
            kept = yield from self._keeps_results(topic)
        return kept

    def _keeps_results(self, topic: str) -> Op[bool]:
        """Whether ``topic`` keeps results (read again when what is known is stale: once.py)."""
        (raw,) = yield Command(("MGET", self.keys.keeps_results(topic)))
        if raw is not None:
            self._keep_for[topic] = float(raw)  # before it is known kept: a thread may use it then
        return self._kept.learn(topic, raw is not None)

    def _pending(self, topic: str, ids: Sequence[str]) -> Op[None]:
        """The pending status records of messages just published to ``topic``, which keeps
        results (cluster layout: each in its own slot, written after the publish, NX so never
        over a consumer's own: docs/design/cluster.md §4). Resent as is: NX is idempotent."""
        keep = self._keep_for[topic]
        calls = []
        for message_id in ids:
            keys, args = once.pending(self.keys, topic, message_id, keep)
            calls.append(Script(scripts_cluster.PENDING, tuple(keys), tuple(args)))
        if len(calls) == 1:
            yield Once(calls[0], lambda _: calls[0])
        else:
            yield Pipeline(tuple(evalsha(call) for call in calls), load=(scripts_cluster.PENDING,))

    def publish_many(
        self,
        topic: str,
        payloads: Iterable[object],
        *,
        headers: dict[str, str] | None = None,
        keys: Iterable[str | None] | None = None,
        durable: int | None = None,
    ) -> Op[list[str]]:
        payloads = list(payloads)
        key_list = [None] * len(payloads) if keys is None else list(keys)
        if len(key_list) != len(payloads):
            raise ValueError(f"{len(key_list)} keys for {len(payloads)} payloads")
        check_topic(topic)
        replicas = self._replicas(durable)
        span = tracing.start_send(topic, batch=len(payloads), headers=headers)
        if span is None:
            return (yield from self._write_many(topic, payloads, headers, key_list, replicas))
        # one span for the batch: its context is every message's parent
        op = self._write_many(
            topic, payloads, tracing.headers_with_context(span, headers), key_list, replicas
        )
        return (yield from tracing.sent_op(span, op))

    def _write_many(
        self,
        topic: str,
        payloads: list[object],
        headers: dict[str, str] | None,
        keys: Sequence[str | None],
        replicas: int,
    ) -> Op[list[str]]:
        messages = [self._message(topic, p, headers, k) for p, k in zip(payloads, keys, strict=True)]
        raws = [entries.encode_entry(m, self.options.max_message_bytes) for m in messages]
        streams = []
        for message in messages:
            streams.append((yield from self._stream(message)))
        writes = [(s, m.id, raw) for s, m, raw in zip(streams, messages, raws, strict=True)]
        # one topic (and in the cluster layout one slot) per batch
        slot = slots.key_slot if self.cluster else None
        for batch_topic, batch in once.batches(messages, writes, slot=slot):
            # one script per batch: all of it or none; its resend writes nothing if the batch's
            # first message is in its stream (once.py); on pub/sub it is not resent
            kept = yield from self._kept_topic(batch_topic)
            source = once.publish_many_script(self.keys)
            build = functools.partial(
                once.publish_many_once, self.keys, topic=batch_topic, writes=batch, kept=kept,
                kind="p" if self.pubsub else "x",
            )  # fmt: skip
            first = script_call(source, build, 0)
            if self.pubsub:
                yield first
            else:
                confirm = self._confirm(batch_topic, replicas, batch[0][0])
                yield Once(first, resend_of(source, build), confirm)
            if self.cluster and kept:
                yield from self._pending(batch_topic, [message_id for _, message_id, _ in batch])
        return [message.id for message in messages]

    # ------------------------------------------------------------------ request / reply

    def request(
        self, topic: str, payload: object, *, timeout: float, headers: dict[str, str] | None
    ) -> Op[Message]:
        """Publish with a fresh reply key, then wait for the first reply there (`TimeoutError`
        after ``timeout``). Nothing to clean up: the list is gone once its reply is popped, and a
        reply that comes too late expires with the key (the hub sets 60 s)."""
        if not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        reply_to = self.keys.new_reply()
        yield from self.publish(topic, payload, headers=headers, reply_to=reply_to)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply from {topic!r} within {timeout}s")
            popped = yield Command(("BLPOP", reply_to, self._wait(left)))
            if popped is not None:
                try:
                    return decode(reply_to, popped[1], max_bytes=self.options.max_message_bytes)
                except MalformedMessage:
                    continue  # not a reply envelope: wait for one

    def _wait(self, left: float) -> float:
        """One BLPOP's timeout: what is left, in slices the socket timeout outlasts."""
        return max(0.001, round(min(left, self.options.block), 3))

    # ------------------------------------------------------------------ results and status

    def status(self, message_id: str) -> Op[MessageStatus]:
        """Where ``message_id`` stands (`actionhub.results`)."""
        (raw,) = yield Command(results.read_status(self.keys, message_id))
        return decode_status(message_id, raw)

    def result(self, message_id: str, *, timeout: float | None) -> Op[Any]:
        """Wait for the result kept for ``message_id`` (`MessageDead` if dead, `TimeoutError`
        after ``timeout``): re-read the record each time its bell rings (`bus.redis.results`),
        and at least once per wait slice."""
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            current = yield from self.status(message_id)
            if current.final:
                return outcome(current)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"message {message_id!r} is still {current.state} after {timeout}s")
            yield Command(results.wait_bell(self.keys, message_id, self._wait(left)))

    # ------------------------------------------------------------------ dead letters

    def dead_letters(self, topic: str, limit: int = 100) -> Op[list[DeadLetter]]:
        found = yield Command(("XRANGE", self.keys.dead(check_topic(topic)), "-", "+", "COUNT", limit))
        return [entries.dead_letter_of(topic, entry_id, fields) for entry_id, fields in found]

    def _take_dead(self, topic: str, ids: Sequence[str] | None) -> Op[list[tuple[bytes, dict[bytes, bytes]]]]:
        dead = self.keys.dead(check_topic(topic))
        if ids is None:
            everything: list[tuple[bytes, dict[bytes, bytes]]] = yield Command(("XRANGE", dead, "-", "+"))
            return everything
        found: list[tuple[bytes, dict[bytes, bytes]]] = []
        for entry_id in ids:
            found.extend((yield Command(("XRANGE", dead, entry_id, entry_id))))
        return found

    def requeue_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> Op[int]:
        taken = yield from self._take_dead(topic, ids)
        durable = self.options.durable  # a transaction always writes: no mark
        confirm = Confirm(durable) if durable else None
        dead = self.keys.dead(topic)
        count = None
        for entry_id, fields in taken:
            again = entries.requeued(topic, fields)
            stream = self.keys.stream(topic)
            if self.pubsub:
                command: tuple[Any, ...] = ("PUBLISH", stream, again.fields["message"])
            else:
                if again.key is not None and count is None:
                    name = self.keys.partitions(topic)
                    (raw,) = yield Command(("MGET", name))
                    count = partition_count(name, raw) or 0
                if again.key is not None and count:
                    stream = self.keys.keyed_stream(topic, again.key, count)
                flat = [part for item in again.fields.items() for part in item]
                command = ("XADD", stream, "*", *flat)
            undead = ("XDEL", dead, entry_id)
            if self.cluster and (self.pubsub or slots.key_slot(stream) != slots.key_slot(dead)):
                # a partition (or a channel) is not in the dead letters' slot: requeued, then
                # deleted; a crash between the two may requeue it twice (docs/design/cluster.md §4)
                plain = self.pubsub or confirm is None
                yield Command(command) if plain else self._transaction((command,), confirm)
                yield Command(undead)
            else:
                yield self._transaction((command, undead), confirm)
        return len(taken)

    def purge_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> Op[int]:
        dead = self.keys.dead(check_topic(topic))
        if ids is None:
            length, _ = yield self._transaction((("XLEN", dead), ("DEL", dead)))
            return int(length)
        if not ids:
            return 0
        return int((yield Command(("XDEL", dead, *ids))))

    # ------------------------------------------------------------------ key names

    def key_names(
        self, topic: str, key: str | None = None, partitions: int | None = None
    ) -> Op[list[tuple[str, str]]]:
        """The keys of ``topic`` in this client's layout, as (what, name): its stream, dead
        letters, partition count, delayed set and partition streams (of ``partitions``, else of
        the count the topic has, read, not set); with ``key``, the partition stream of a message
        with that ordering key (of the count a publish would set if the topic has none yet)."""
        keys, topic = self.keys, check_topic(topic)
        key = None if key is None else check_key(key)
        stream = keys.stream(topic)
        names = [("stream", stream), ("dead", keys.dead(topic)), ("partitions", keys.partitions(topic))]
        names.append(("delayed", self._delayed_of(stream)))
        count = partitions
        if count is None:
            name = keys.partitions(topic)
            (raw,) = yield Command(("MGET", name))
            count = partition_count(name, raw)
        names += ((f"p{p}", keys.partition(topic, p)) for p in range(count or 0))
        if key is not None:
            keyed = keys.keyed_stream(topic, key, count or DEFAULT_PARTITIONS)
            names += (("key", keyed), ("key delayed", self._delayed_of(keyed)))
        return names

    def _delayed_of(self, target: str) -> str:
        ckeys = self._cluster_keys
        return self.keys.delayed if ckeys is None else ckeys.delayed_of(target)

    # ------------------------------------------------------------------ operating hubs

    def hubs(self) -> Op[list[HubSnapshot]]:
        names = yield Scan(self.keys.hubs)
        if not names:
            return []
        if self.cluster:  # the snapshots lie in any slots: one MGET each, on their nodes
            documents = [found for (found,) in (yield Pipeline(tuple(("MGET", name) for name in names)))]
        else:
            documents = yield Command(("MGET", *names))
        return snapshots_from(documents)

    def command(self, verb: str, group: str, *, timeout: float, **arguments: int) -> Op[list[CommandAnswer]]:
        document = command_document(verb, group, **arguments)
        live = {snapshot.hub for snapshot in (yield from self.hubs())}
        reply_to = self.keys.new_reply()  # the hubs' answers expire with it if this ends early
        yield Command(("PUBLISH", self.keys.control, entries.control_document(document, reply_to)))
        answers: dict[str, CommandAnswer] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(live):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            popped = yield Command(("BLPOP", reply_to, self._wait(left)))
            if popped is not None:
                answer = decode_answer(popped[1])
                answers[answer.hub] = answer
        yield Command(("DEL", reply_to))
        for hub in live - answers.keys():
            answers[hub] = CommandAnswer(hub, "silent", f"no answer within {timeout}s")
        return sorted(answers.values(), key=lambda a: a.hub)


def _no_cluster_durable(durable: int) -> None:
    if durable:
        raise ConfigurationError(
            "durable= is not supported by the asyncio client on a Redis Cluster yet (WAIT must follow "
            "the write on its node's connection: docs/design/cluster.md §9); Client and TrioClient do it"
        )


class _Read:
    """What `check_layout` reads of Redis, answered from what an operation read (its writes are
    the operation's own)."""

    def __init__(self, found: bytes | None) -> None:
        self._found = found

    def set(self, *args: object, **kwargs: object) -> None:
        pass

    def mget(self, names: Sequence[str]) -> list[bytes | None]:
        return [self._found]
