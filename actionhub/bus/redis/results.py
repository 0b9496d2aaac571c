"""Status records and results on Redis: the commands, sans I/O (shared by the hub's bus and the
clients), and the bus's `StatusStore`.

A record is one string key, `Keys.status`, with its time to live (`actionhub.results.ttl`).
A final write also rings `Keys.status_bell`: a list of one entry that lives a short while; a
waiter blocks on it with ``BLMOVE bell bell``, which rotates the entry in place, so every waiter
wakes and the entry stays for the next; it then re-reads the record. A waiter that comes after the
bell is gone finds the final record at once; a missed ring costs at most one wait slice. While a
group keeps results, its hubs keep `Keys.keeps_results` set (refreshed): publishers that know it
(`once.KeptTopics`) then publish through `scripts.PUBLISH_ONCE`, which writes a pending record.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from ...errors import HubStopped
from ..statuses import StatusStore, check_results_group
from . import scripts
from .keys import Keys

if TYPE_CHECKING:
    from .common import RedisBusBase

log = logging.getLogger("actionhub.redis")

#: Seconds `Keys.keeps_results` lives unless a hub of the group refreshes it (every third of it).
KEEP_TTL = 60.0

#: Longest a bell lives after a final write (never longer than the record: a waiter rung for a
#: record that is gone would wake again at once).
BELL_TTL = 30.0


def read_status(keys: Keys, message_id: str) -> tuple[Any, ...]:
    """The command reading a record: its reply is ``[record or None]``. MGET, as the least-privilege
    user of the README already may."""
    return ("MGET", keys.status(message_id))


def wait_bell(keys: Keys, message_id: str, seconds: float) -> tuple[Any, ...]:
    """The command waiting up to ``seconds`` for the message's bell (without taking it)."""
    bell = keys.status_bell(message_id)
    return ("BLMOVE", bell, bell, "RIGHT", "LEFT", max(0.001, round(seconds, 3)))


def write_status(
    keys: Keys, message_id: str, record: bytes, ttl: float, *, final: bool, rank: int
) -> tuple[list[str], list[bytes | int]]:
    """(KEYS, ARGV) of `scripts.WRITE_STATUS` (``rank``: `actionhub.results.rank` of ``record``)."""
    ttl_ms = max(1, math.ceil(ttl * 1000))
    bell_ms = min(ttl_ms, int(BELL_TTL * 1000)) if final else 0
    return [keys.status(message_id), keys.status_bell(message_id)], [record, ttl_ms, bell_ms, rank]


def keep_results(keys: Keys, topic: str, group: str, seconds: float) -> list[tuple[Any, ...]]:
    """The commands marking ``topic`` as kept for ``seconds`` by ``group`` (for `KEEP_TTL`)."""
    ttl = int(KEEP_TTL * 1000)
    return [
        ("SET", keys.keeps_results(topic), repr(float(seconds)), "PX", ttl),
        ("SET", keys.results_group(topic), group, "PX", ttl),
    ]


def claim_results(keys: Keys, topic: str, group: str) -> tuple[Any, ...]:
    """The command claiming ``topic``'s results for ``group`` unless another group has: its reply
    is the group that keeps them (None: ``group`` claimed them just now)."""
    return ("SET", keys.results_group(topic), group, "NX", "GET", "PX", int(KEEP_TTL * 1000))


#: Most status writes in one round trip.
WRITE_BATCH = 500


_Call = tuple[Any, list[str], list[bytes | int]]


class _Batch:
    """Writes for one round trip, at most one per message: a later write of a message takes the
    place of the earlier one still queued (``running`` then ``done`` of a quick action: only
    ``done`` is sent; the message's writes still land in order)."""

    __slots__ = ("calls", "done", "error", "slots")

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.slots: dict[str, int] = {}  # status key -> its write's index in `calls`
        self.done = trio.Event()
        self.error: Exception | None = None

    def put(self, call: _Call) -> None:
        key = call[1][0]
        slot = self.slots.get(key)
        if slot is None:
            self.slots[key] = len(self.calls)
            self.calls.append(call)
        else:
            self.calls[slot] = call

    def put_before(self, calls: list[_Call]) -> None:
        """Queue ``calls`` (a failed round trip's) ahead of the writes queued meanwhile."""
        newer, self.calls, self.slots = self.calls, [], {}
        for call in calls + newer:
            self.put(call)


class RedisStatuses(StatusStore):
    """The status records of one Redis bus (made once per bus: ``bus.statuses()``).

    One writer task sends every write, batch after batch, in the order they were made: a write
    of a message never lands before an earlier one of it. A batch Redis refuses goes back ahead
    of the newer writes and is sent again (after a pause): no write is dropped, and `flush`
    (which the streams bus's acker awaits before each round of acks) fails meanwhile, so no
    ack goes out before its done record is in Redis."""

    def __init__(self, bus: RedisBusBase) -> None:
        self._bus = bus
        self._keys = bus.keys
        self._write = bus.client.register_script(scripts.WRITE_STATUS)
        self._kept: dict[str, tuple[str, float]] = {}  # topic -> (group, seconds), refreshed while open
        self._refreshing = False
        self._batch = _Batch()  # the writes waiting for the writer's next round trip
        self._sending: _Batch | None = None  # the writes of the round trip under way
        self._work = trio.Event()
        self._writing = False
        #: the bus's acker sends what is queued before its acks (`flush`): a done write need not wait
        self._flushed_before_acks: bool = bus.statuses_before_acks

    async def keep(self, topic: str, group: str, seconds: float) -> None:
        (keeping,) = await self._bus.execute([claim_results(self._keys, topic, group)], what="keep results")
        check_results_group(topic, group, keeping)
        held = self._kept.get(topic)
        self._kept[topic] = (group, max(seconds, 0.0 if held is None else held[1]))
        self._bus.kept_topics.learn(
            topic, True, self._kept[topic][1]
        )  # this hub's own publishes know at once
        await self._mark([topic])
        nursery = self._bus._nursery
        if not self._refreshing and nursery is not None:
            self._refreshing = True
            nursery.start_soon(self._bus.keep_running, "keep results", self._refresh)

    async def _refresh(self) -> None:
        await trio.sleep(KEEP_TTL / 3)
        await self._mark(list(self._kept))

    async def _mark(self, topics: list[str]) -> None:
        commands = [c for topic in topics for c in keep_results(self._keys, topic, *self._kept[topic])]
        await self._bus.execute(commands, what="keep results")

    async def write(self, message_id: str, record: bytes, ttl: float, *, final: bool, rank: int) -> None:
        """Group commit: every write made while the writer's round trip is out goes in its next
        one (many workers' records for the price of one round trip), in order. A final write
        returns once written; the others (running, retrying: what the next write of the message
        overwrites) return once queued."""
        batch = self._queue(message_id, record, ttl, final=final, rank=rank)
        if final:
            await self._written(batch)

    async def write_done(self, message_id: str, record: bytes, ttl: float, *, rank: int) -> None:
        """Queued only, on a bus whose acker flushes the writes before its acks (streams);
        written before returning otherwise."""
        batch = self._queue(message_id, record, ttl, final=True, rank=rank)
        if not self._flushed_before_acks:
            await self._written(batch)

    async def flush(self) -> None:
        """Return once every write queued so far is in Redis; raise the error of a round trip
        that failed meanwhile (its writes are queued again, ahead of the newer ones)."""
        batch = self._batch if self._batch.calls else self._sending
        if batch is not None:
            await self._written(batch)

    def _queue(self, message_id: str, record: bytes, ttl: float, *, final: bool, rank: int) -> _Batch:
        keys, args = write_status(self._keys, message_id, record, ttl, final=final, rank=rank)
        batch = self._batch
        batch.put((self._write, keys, args))
        self._work.set()
        if not self._writing:
            self._writing = True
            nursery = self._bus._nursery
            assert nursery is not None, "the bus is not open"
            nursery.start_soon(self._writer)
        return batch

    @staticmethod
    async def _written(batch: _Batch) -> None:
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    async def _writer(self) -> None:
        failures = 0
        try:
            while True:
                await self._work.wait()
                self._work = trio.Event()
                batch, self._batch = self._batch, _Batch()
                self._sending = batch
                written = False
                try:
                    for start in range(0, len(batch.calls), WRITE_BATCH):
                        chunk = batch.calls[start : start + WRITE_BATCH]
                        await self._bus.run_scripts(chunk, what="write message statuses")
                except Exception as error:  # told to the batch's waiters; its writes go again
                    failures += 1
                    log.error("writing %d message status(es) failed: %r; retrying", len(batch.calls), error)
                    batch.error = error
                    self._batch.put_before(batch.calls)  # ahead of the newer writes: order kept
                    self._work.set()
                else:
                    written, failures = True, 0
                finally:
                    if not written and batch.error is None:  # cancelled: the bus is closing
                        batch.error = HubStopped("the bus closed before these statuses were written")
                    self._sending = None
                    batch.done.set()
                if failures:
                    await trio.sleep(min(5.0, 0.05 * 2**failures))
        finally:
            self._writing = False

    async def read(self, message_id: str) -> bytes | None:
        command = read_status(self._keys, message_id)
        ((raw,),) = await self._bus.execute([command], what="read a message status")
        return raw if raw is None else bytes(raw)

    async def wait(self, message_id: str, seconds: float) -> None:
        command = wait_bell(self._keys, message_id, seconds)
        client = self._bus.client
        await self._bus.call(lambda: client.execute_command(*command), what="wait for a result", blocks=True)
