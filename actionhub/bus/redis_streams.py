"""``redis://``: Redis Streams with consumer groups, at-least-once.

* One stream per topic (``<prefix><topic>``), one consumer group per action (or its ``group=``),
  created at id 0 so that what was published before the first hub started is not missed.
* Reads are batched: ``XREADGROUP COUNT <free credit> BLOCK``, never more than the group has room
  for. Acks are batched too: one pipelined ``XACK`` per stream for whatever finished meanwhile.
  Nothing is acked that did not finish.
* Leases: an entry read by a hub stays in its pending list. A live hub renews the entries it holds
  every ``visibility_timeout / 3`` (XCLAIM JUSTID, checked in a script so a lease another hub
  has taken is never stolen back); an entry idle for ``visibility_timeout`` belongs to a dead hub
  and is reclaimed (XPENDING IDLE, then XCLAIM) by a live one, which looks at least once a second.
  Redis counts deliveries, and each delivery beyond the first is one more attempt, so a crash loop
  ends in the dead letters.
* A retry is scheduled in the delayed set and acked in one script; its entry, when due, carries a
  ``group`` field so that only the group that failed it runs it again (other groups skip it).
* Trimming: every ``trim_interval`` a script trims each consumed stream below the oldest entry that
  any of its groups has not yet delivered or acked (``XTRIM MINID ~``). An undelivered or unacked
  entry is never trimmed; a stream with a group nobody consumes any more keeps growing until that
  group is destroyed (``XGROUP DESTROY``). The same script removes consumers that hold nothing and
  have read nothing for an hour: what killed hubs leave behind in ``XINFO CONSUMERS``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, cast

import attrs
import orjson
import trio
from redis.exceptions import ResponseError

from ..errors import HubStopped, MalformedMessage
from ..message import Message
from ._redis import RedisBusBase, RedisOptions, RedisProgress, is_nogroup, text
from ._wire import Command
from .base import Delivery, Inbox, Subscription

log = logging.getLogger("actionhub.redis")

_RENEW = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      table.insert(lost, ARGV[i])
    end
  end
end
return lost
"""

# On a graceful close: entries read but never started are made claimable at once (their idle
# time is set past the visibility timeout), and the consumer is removed if it holds nothing.
_RELEASE = """
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
  end
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""

#: Entries per round trip (one MULTI/EXEC) of `RedisStreamsBus.publish_many`.
PUBLISH_BATCH = 1000

#: Seconds after which the trim script removes a consumer that holds nothing and has not read.
FORGET_CONSUMERS_AFTER = 3600.0

_TRIM = """
local function record(flat)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  return fields
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local min_id, min_ms, min_seq = nil, nil, nil
for _, flat_group in ipairs(groups) do
  local g = record(flat_group)
  -- consumers of hubs that died long ago and hold nothing are forgotten (XREADGROUP recreates
  -- a live one that was only quiet)
  for _, flat_consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], g['name'])) do
    local c = record(flat_consumer)
    if c['pending'] == 0 and c['idle'] > tonumber(ARGV[1]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], g['name'], c['name'])
    end
  end
  local keep = g['last-delivered-id']
  if g['pending'] > 0 then keep = redis.call('XPENDING', KEYS[1], g['name'])[2] end
  local dash = string.find(keep, '-', 1, true)
  local ms, seq = tonumber(string.sub(keep, 1, dash - 1)), tonumber(string.sub(keep, dash + 1))
  if min_id == nil or ms < min_ms or (ms == min_ms and seq < min_seq) then
    min_id, min_ms, min_seq = keep, ms, seq
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', min_id)
"""


def _stream_entries(response: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not response:
        return []
    streams = response.values() if isinstance(response, dict) else (entries for _, entries in response)
    return [entry for entries in streams for entry in entries]


# Create a consumer group, atomically deciding where it starts: at the stream's start when asked
# (ARGV[2] == "1") or when no group reads the stream yet (its entries wait for their first
# consumer: publishing before any hub started loses nothing), else at its end. Returns
# {created (0/1), entries before the start}.
_CREATE_GROUP = """
local start = '0'
local length = redis.call('XLEN', KEYS[1])
if ARGV[2] ~= '1' and length > 0 and #redis.call('XINFO', 'GROUPS', KEYS[1]) > 0 then start = '$' end
local reply = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], start, 'MKSTREAM')
if type(reply) == 'table' and reply.err then
  if string.find(reply.err, 'BUSYGROUP', 1, true) then return {0, 0} end
  return redis.error_reply(reply.err)
end
if start == '$' then return {1, length} end
return {1, 0}
"""


def _wire_entries(reply: list[Any] | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a raw RESP2 XREADGROUP reply: ``[[stream, [[id, [k, v, ...]], ...]]]``."""
    if not reply:
        return []
    return [
        (entry_id, dict(zip(fields[::2], fields[1::2], strict=True)))
        for _, entries in reply
        for entry_id, fields in entries
    ]


def _token(delivery: Delivery) -> tuple[bytes, bytes]:
    """(stream entry id, raw entry) of a delivery this transport made."""
    return cast(tuple[bytes, bytes], delivery.token)


class RedisStreamsBus(RedisBusBase):
    """At-least-once transport on Redis Streams and consumer groups."""

    durable = True

    def __init__(self, url: str, redis_url: str, options: RedisOptions, *, client: Any = None) -> None:
        super().__init__(url, redis_url, options, client=client)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self._trim = self.client.register_script(_TRIM)
        self._create_group = self.client.register_script(_CREATE_GROUP)
        self._subscriptions: list[_StreamSubscription] = []
        self._acks_due = trio.Event()

    def stream_key(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    # ------------------------------------------------------------------ publishing

    async def publish(self, message: Message, *, delay: float | None = None) -> str:
        raw = self.encode(message)
        stream = self.stream_key(message.topic)
        if delay:
            await self.schedule("x", stream, "", raw, delay)
        else:
            deadline = trio.current_time() + self.options.publish_timeout
            wire = self.wire
            if wire is not None:
                await self.call_async(
                    partial(wire.execute, ("XADD", stream, "*", "message", raw)),
                    what="publish",
                    deadline=deadline,
                )
            else:
                await self.call(
                    lambda: self.client.xadd(stream, {"message": raw}), what="publish", deadline=deadline
                )
        return message.id

    async def publish_many(self, messages: Sequence[Message]) -> list[str]:
        entries = [(self.stream_key(message.topic), self.encode(message)) for message in messages]
        for start in range(0, len(entries), PUBLISH_BATCH):
            chunk = entries[start : start + PUBLISH_BATCH]

            def add(chunk: list[tuple[str, bytes]] = chunk) -> None:
                # a transaction: a retry after a lost connection cannot write half a batch twice
                with self.client.pipeline(transaction=True) as pipe:
                    for stream, raw in chunk:
                        pipe.xadd(stream, {"message": raw})
                    pipe.execute()

            await self.call(add, what="publish", deadline=trio.current_time() + self.options.publish_timeout)
        return [message.id for message in messages]

    async def history(
        self, topic: str, *, first: str = "-", last: str = "+", count: int = 1000
    ) -> list[tuple[str, Message]]:
        entries = await self.call(
            lambda: self.client.xrange(self.stream_key(topic), first, last, count=count),
            what=f"read the history of {topic}",
        )
        found = []
        for entry_id, fields in entries:
            raw = fields.get(b"message")
            if raw is None or b"group" in fields:  # not a message, or a retry meant for one group
                continue
            entry = entry_id.decode()
            try:
                found.append((entry, self.decode_message(topic, raw, entry)))
            except MalformedMessage:
                continue  # the consumers dead-lettered it already
        return found

    def _requeue(self, topic: str, raw: bytes, group: str, entry_id: bytes) -> None:
        fields: dict[str, bytes | str] = {"message": raw}
        if group:
            fields["group"] = group
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream_key(topic), fields)
            pipe.xdel(self.dead_key(topic), entry_id)
            pipe.execute()

    # ------------------------------------------------------------------ consuming

    keeps_history = True

    async def subscribe(
        self, topic: str, group: str, inbox: Inbox, *, earliest: bool = False
    ) -> Subscription:
        if self._nursery is None:
            raise HubStopped("redis bus is not open")
        subscription = _StreamSubscription(self, topic, group, inbox, earliest=earliest)
        await subscription.ensure_group()
        self._subscriptions.append(subscription)
        await self._nursery.start(subscription.read_loop)
        return subscription

    async def _start_background(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.keep_running, "acknowledging", self._ack_when_due)
        nursery.start_soon(self.keep_running, "renewing leases", self._renew_leases)
        nursery.start_soon(self.keep_running, "trimming", self._trim_streams)

    async def _before_close(self) -> None:
        await self.flush_acks()

    def wake_acker(self) -> None:
        self._acks_due.set()

    async def _ack_when_due(self) -> None:
        await self._acks_due.wait()
        self._acks_due = trio.Event()
        await self.flush_acks()

    async def flush_acks(self) -> None:
        """One round trip for every ack (and malformed entry's dead letter) since the last one."""
        batch = [(s, *s.take_settled()) for s in self._subscriptions if s.acks or s.letters]
        if not batch:
            return

        def ack() -> None:
            # a transaction only with letters: each must be acked if, and only if, it is written
            with self.client.pipeline(transaction=any(letters for _, _, letters in batch)) as pipe:
                for subscription, acks, letters in batch:
                    subscription.add_to(pipe, acks, letters)
                pipe.execute()

        wire = self.wire
        try:
            if wire is not None and not any(letters for _, _, letters in batch):
                commands: list[Command] = [("XACK", s.stream, s.group, *acks) for s, acks, _ in batch]
                await self.call_async(partial(wire.execute, *commands), what="ack")
            else:
                await self.call(ack, what="ack")
        except BaseException:  # say, an OOM reply: keep what is owed for the next round
            for subscription, acks, letters in batch:
                subscription.acks[:0] = acks
                subscription.letters[:0] = letters
            raise

    async def _renew_leases(self) -> None:
        await trio.sleep(self.options.visibility_timeout / 3)
        for subscription in list(self._subscriptions):
            ids = list(subscription.in_hand)
            if not ids:
                continue
            lost = await self.call(
                partial(
                    self._renew, keys=[subscription.stream], args=[subscription.group, self.consumer, *ids]
                ),
                what="renew leases",
            )
            if lost:
                log.warning(
                    "%s/%s: the lease of %d message(s) was taken by another hub (this hub stalled "
                    "longer than visibility_timeout); they may run twice",
                    subscription.topic,
                    subscription.group,
                    len(lost),
                )

    async def _trim_streams(self) -> None:
        await trio.sleep(self.options.trim_interval)
        for stream in {s.stream for s in self._subscriptions}:
            await self.call(partial(self._trim_stream, stream), what="trim")

    def _trim_stream(self, stream: str) -> int:
        """Trim what no group needs any more and forget long-gone consumers; returns entries removed."""
        return int(self._trim(keys=[stream], args=[int(FORGET_CONSUMERS_AFTER * 1000)]))

    def _forget(self, subscription: _StreamSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)


@attrs.frozen
class _Letter:
    """A stream entry on its way to the dead letters."""

    entry_id: bytes
    raw: bytes
    reason: str
    attempts: int = 1
    error: str | None = None
    traceback: str | None = None


class _StreamSubscription(RedisProgress, Subscription):
    """One consumer group of one stream, feeding one inbox."""

    bus: RedisStreamsBus

    def __init__(
        self, bus: RedisStreamsBus, topic: str, group: str, inbox: Inbox, *, earliest: bool = False
    ) -> None:
        self.bus = bus
        self.earliest = earliest
        self.topic = topic
        self.group = group
        self.inbox = inbox
        self.stream = bus.stream_key(topic)
        self.in_hand: set[bytes] = set()  # entry ids read and not yet settled: leases to renew
        self.acks: list[bytes] = []
        self.letters: list[_Letter] = []  # malformed entries for the acker to dead-letter
        self._group_bytes = group.encode()
        self._groups_of_stream: set[bytes] = {self._group_bytes}  # as last seen: retries' targets
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._closed = False
        self._reclaimed = 0  # in the current run of reclaims, for one log line at its end
        self._settled = trio.lowlevel.ParkingLot()  # woken when in_hand becomes empty
        self.batch = max(1, inbox.free_credit() // 2)
        self._wire = bus.new_wire()  # blocking reads hold a connection: one of its own

    def _read_groups(self) -> set[bytes]:
        return {g["name"] for g in self.bus.client.xinfo_groups(self.stream)}

    def take_settled(self) -> tuple[list[bytes], list[_Letter]]:
        """The acks and dead letters owed to Redis, handed over to be sent."""
        taken = self.acks, self.letters
        self.acks, self.letters = [], []
        return taken

    async def ensure_group(self, *, from_start: bool = False) -> None:
        """Create the consumer group if it does not exist (see _CREATE_GROUP for where it starts;
        ``from_start``: at the stream's start whatever ``start`` says)."""
        earliest = int(self.earliest or from_start)
        created, skipped = await self.bus.call(
            lambda: self.bus._create_group(keys=[self.stream], args=[self.group, earliest]),
            what=f"create group {self.group} on {self.stream}",
        )
        if created and skipped:
            log.info(
                "%s: new group %s starts after the %d entries already there (start='earliest' reads them)",
                self.stream,
                self.group,
                skipped,
            )

    # ------------------------------------------------------------------ reading

    async def read_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        options = self.bus.options
        next_claim = trio.current_time()  # at start: pick up what crashed hubs left at once
        # a dead hub's messages come back within visibility_timeout + claim_interval
        claim_interval = min(options.visibility_timeout / 2, 1.0)
        try:
            with self._scope:
                while True:
                    try:
                        # half the buffer at least: fewer, fuller batches; the workers still have work
                        credit = await self.inbox.wait_for_credit(self.batch)
                    except HubStopped:
                        return
                    try:
                        if trio.current_time() >= next_claim:
                            if await self._reclaim(credit):
                                continue  # there may be more: reclaim again before reading
                            next_claim = trio.current_time() + claim_interval
                        await self._read(credit)
                    except ResponseError as exc:
                        if is_nogroup(exc):
                            log.warning(
                                "%s: group %s is gone (Redis lost it?); recreating it",
                                self.stream,
                                self.group,
                            )
                            # at the start: at-least-once would rather run a message twice
                            # than skip what was published since the group vanished
                            await self.ensure_group(from_start=True)
                        else:  # say, OOM: keep the group alive and try again later
                            log.error("%s: reading failed: %r; retrying in a second", self.stream, exc)
                            await trio.sleep(1)
                    except HubStopped:
                        return
        finally:
            self._done.set()

    async def _read(self, credit: int) -> None:
        client, bus = self.bus.client, self.bus
        block_ms = int(bus.options.block * 1000)
        what = f"read {self.stream}"
        if self._wire is not None:
            command = ("XREADGROUP", "GROUP", self.group, bus.consumer, "COUNT", credit, "BLOCK", block_ms)
            (reply,) = await bus.call_async(
                partial(self._wire.execute, (*command, "STREAMS", self.stream, ">")), what=what
            )
            entries = _wire_entries(reply)
        else:
            response = await bus.call(
                lambda: client.xreadgroup(
                    self.group, bus.consumer, {self.stream: ">"}, count=credit, block=block_ms
                ),
                what=what,
            )
            entries = _stream_entries(response)
        if entries:
            await self._deliver(entries, None)

    async def _reclaim(self, credit: int) -> bool:
        """Take over entries idle past the visibility timeout (their hub died). True if any.

        An entry on its first delivery was in a hub that died once: up to ``credit`` of them are
        taken as one batch, so the work of a crashed hub comes back at full speed. An entry
        delivered before was in a hub that died at least twice: it may be what kills them, so it
        runs in quarantine, alone, once what this group holds is settled and acked, and nothing
        else is read until it is settled. A message that kills every hub thus drags its
        bystanders into one extra delivery at most, and ends in the dead letters by itself."""
        bus = self.bus
        options = bus.options
        if trio.current_time() < bus.reachable_since + options.visibility_timeout:
            return False  # after an outage, give every hub time to reconnect and renew its leases
        min_idle = int(options.visibility_timeout * 1000)

        def abandoned() -> list[dict[str, Any]]:
            idle = bus.client.xpending_range(self.stream, self.group, "-", "+", credit, idle=min_idle)
            # an entry of this hub's own whose renewal is late is still running here
            return [entry for entry in idle if entry["message_id"] not in self.in_hand]

        idle = await bus.call(abandoned, what=f"look for abandoned messages in {self.stream}")
        if not idle:
            if self._reclaimed:
                log.warning(
                    "%s/%s: reclaimed %d message(s) left by a dead or stalled hub",
                    self.stream,
                    self.group,
                    self._reclaimed,
                )
                self._reclaimed = 0
            return False
        fresh = [entry["message_id"] for entry in idle if entry["times_delivered"] <= 1]
        suspect = [entry["message_id"] for entry in idle if entry["times_delivered"] > 1][:1]
        ids = fresh or suspect
        # XCLAIM with the idle bound: an entry renewed or claimed by another hub meanwhile stays there
        claimed = await bus.call(
            lambda: bus.client.xclaim(self.stream, self.group, bus.consumer, min_idle, ids),
            what=f"reclaim {self.stream}",
        )
        entries = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if not entries:  # all taken by other hubs meanwhile
            return False
        self._reclaimed += len(entries)
        deliveries = {entry["message_id"]: entry["times_delivered"] + 1 for entry in idle}
        if fresh:
            await self._deliver(entries, deliveries)
            return True
        for entry_id, _ in entries:
            log.info(
                "%s/%s: reclaimed %s in quarantine (delivery %d)",
                self.stream,
                self.group,
                text(entry_id),
                deliveries[entry_id],
            )
        await self._settle_all()
        await self._deliver(entries, deliveries)
        await self._settle_all()
        return True

    async def _settle_all(self) -> None:
        """Wait until every entry this subscription holds is settled, and its acks are sent."""
        while self.in_hand:
            await self._settled.park()
        await self.bus.flush_acks()

    async def _deliver(
        self, entries: Iterable[tuple[bytes, dict[bytes, bytes]]], counts: dict[bytes, int] | None
    ) -> None:
        malformed: list[tuple[bytes, dict[bytes, bytes], str]] = []
        groups_read = False
        for entry_id, fields in entries:
            target = fields.get(b"group")
            if target is not None and target != self._group_bytes:
                if target not in self._groups_of_stream and not groups_read:  # a group new to us?
                    self._groups_of_stream = await self.bus.call(
                        self._read_groups, what=f"groups of {self.stream}"
                    )
                    groups_read = True
                if target in self._groups_of_stream:
                    self.acks.append(entry_id)  # a retry meant for another group of this topic
                    self.bus.wake_acker()
                else:  # no group would ever run it: say so instead of dropping it
                    name = target.decode(errors="replace")
                    malformed.append(
                        (entry_id, fields, f"entry is for group {name!r}, which {self.stream} lacks")
                    )
                continue
            raw = fields.get(b"message")
            try:
                if raw is None:
                    raise MalformedMessage("stream entry has no 'message' field")
                message = self.bus.decode_message(self.topic, raw, entry_id.decode())
            except MalformedMessage as exc:
                malformed.append((entry_id, fields, str(exc)))
                continue
            deliveries = 1 if counts is None else counts.get(entry_id, 1)
            if deliveries > 1:
                message = attrs.evolve(message, attempt=message.attempt + deliveries - 1)
            self.in_hand.add(entry_id)
            self.inbox.put_nowait(Delivery(message, self, (entry_id, raw)))
        if malformed:
            self._dead_letter_malformed(malformed)

    def _dead_letter_malformed(self, malformed: list[tuple[bytes, dict[bytes, bytes], str]]) -> None:
        """Hand malformed entries to the acker, which dead-letters and acks them with the next
        batch of acks (reading goes on meanwhile); say so in one line."""
        letters = self.letters
        for entry_id, fields, reason in malformed:
            self.inbox.note_malformed()
            raw = fields.get(b"message")
            if raw is None:
                raw = orjson.dumps(
                    {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
                )
            letters.append(_Letter(entry_id, raw, f"malformed: {reason}"))
        entry_id, _, reason = malformed[0]
        log.warning(
            "%s: dead-lettering %d malformed entr%s (the first, %s: %s)",
            self.stream,
            len(malformed),
            "y" if len(malformed) == 1 else "ies",
            text(entry_id),
            reason,
        )
        self.bus.wake_acker()

    async def _move_to_dead(self, letters: list[_Letter]) -> None:
        """Add the letters to the dead letters and acknowledge their entries, in one transaction."""

        def move() -> None:
            with self.bus.client.pipeline(transaction=True) as pipe:
                self.add_to(pipe, [], letters)
                pipe.execute()

        await self.bus.call(move, what="dead-letter")

    def add_to(self, pipe: Any, acks: list[bytes], letters: list[_Letter]) -> None:
        """Queue on ``pipe``: the letters into the dead letters, then the acks of the acked
        entries and of the letters' entries."""
        bus = self.bus
        for letter in letters:
            fields = bus.dead_letter_fields(
                letter.raw,
                topic=self.topic,
                group=self.group,
                reason=letter.reason,
                attempts=letter.attempts,
                error=letter.error,
                traceback=letter.traceback,
            )
            pipe.xadd(bus.dead_key(self.topic), fields, maxlen=bus.options.max_dead_letters)
        pipe.xack(self.stream, self.group, *acks, *(letter.entry_id for letter in letters))

    # ------------------------------------------------------------------ settling

    def _forget_entry(self, entry_id: bytes) -> None:
        self.in_hand.discard(entry_id)
        if not self.in_hand:
            self._settled.unpark_all()

    async def ack(self, delivery: Delivery) -> None:
        entry_id = _token(delivery)[0]
        self._forget_entry(entry_id)
        self.acks.append(entry_id)
        self.bus.wake_acker()

    async def retry(self, delivery: Delivery, *, delay: float, error: str | None) -> None:
        bus = self.bus
        entry_id = _token(delivery)[0]
        entry = attrs.evolve(delivery.message, attempt=delivery.message.attempt + 1).encode()
        member = orjson.dumps(["x", self.stream, self.group, entry.decode()])
        await bus.call(
            lambda: bus._schedule(
                keys=[bus.delayed_key, self.stream], args=[delay, member, self.group, entry_id]
            ),
            what="schedule retry",
        )
        self._forget_entry(entry_id)

    async def dead_letter(
        self, delivery: Delivery, *, reason: str, error: str | None = None, traceback: str | None = None
    ) -> None:
        entry_id, raw = _token(delivery)
        letter = _Letter(entry_id, raw, reason, delivery.message.attempt, error, traceback)
        await self._move_to_dead([letter])
        self._forget_entry(entry_id)

    async def close(self) -> None:
        """Stop reading; flush acks; make what was read but never started claimable at once."""
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()
        await self._done.wait()
        if self._wire is not None:
            self._wire.close()  # a read still blocked in Redis ends with it, delivering nothing
        bus = self.bus
        await bus.flush_acks()
        bus._forget(self)
        idle = int(bus.options.visibility_timeout * 1000) * 2
        ids = list(self.in_hand)
        self.in_hand.clear()
        await bus.call(
            lambda: bus._release(keys=[self.stream], args=[self.group, bus.consumer, idle, *ids]),
            what="release unstarted messages",
        )
