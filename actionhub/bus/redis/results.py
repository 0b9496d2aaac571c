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

from ..statuses import StatusStore
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
    keys: Keys, message_id: str, record: bytes, ttl: float, *, final: bool
) -> tuple[list[str], list[bytes | int]]:
    """(KEYS, ARGV) of `scripts.WRITE_STATUS`."""
    ttl_ms = max(1, math.ceil(ttl * 1000))
    bell_ms = min(ttl_ms, int(BELL_TTL * 1000)) if final else 0
    return [keys.status(message_id), keys.status_bell(message_id)], [record, ttl_ms, bell_ms]


def keep_results(keys: Keys, topic: str, seconds: float) -> tuple[Any, ...]:
    """The command marking ``topic`` as kept for ``seconds`` (for `KEEP_TTL`)."""
    return ("SET", keys.keeps_results(topic), repr(float(seconds)), "PX", int(KEEP_TTL * 1000))


#: Most status writes in one round trip.
WRITE_BATCH = 500


class _Batch:
    __slots__ = ("calls", "done", "error")

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[str], list[bytes | int]]] = []
        self.done = trio.Event()
        self.error: Exception | None = None


class RedisStatuses(StatusStore):
    """The status records of one Redis bus (made once per bus: ``bus.statuses()``)."""

    def __init__(self, bus: RedisBusBase) -> None:
        self._bus = bus
        self._keys = bus.keys
        self._write = bus.client.register_script(scripts.WRITE_STATUS)
        self._kept: dict[str, float] = {}  # topic -> seconds, refreshed while the bus is open
        self._refreshing = False
        self._batch = _Batch()  # the writes waiting for the writer's next round trip
        self._work = trio.Event()
        self._writing = False

    async def keep(self, topic: str, seconds: float) -> None:
        self._kept[topic] = max(seconds, self._kept.get(topic, 0.0))
        self._bus.kept_topics.learn(topic, True)  # this hub's own publishes know at once
        await self._mark([topic])
        nursery = self._bus._nursery
        if not self._refreshing and nursery is not None:
            self._refreshing = True
            nursery.start_soon(self._bus.keep_running, "keep results", self._refresh)

    async def _refresh(self) -> None:
        await trio.sleep(KEEP_TTL / 3)
        await self._mark(list(self._kept))

    async def _mark(self, topics: list[str]) -> None:
        commands = [keep_results(self._keys, topic, self._kept[topic]) for topic in topics]
        await self._bus.execute(commands, what="keep results")

    async def write(self, message_id: str, record: bytes, ttl: float, *, final: bool) -> None:
        """Group commit: every write made while the writer's round trip is out goes in its next
        one (many workers' records for the price of one round trip), in order. A final write
        returns once written (a done record is written before its ack); the others (running,
        retrying: what the next write of the message overwrites) return once queued."""
        keys, args = write_status(self._keys, message_id, record, ttl, final=final)
        batch = self._batch
        batch.calls.append((self._write, keys, args))
        self._work.set()
        if not self._writing:
            self._writing = True
            nursery = self._bus._nursery
            assert nursery is not None, "the bus is not open"
            nursery.start_soon(self._writer)
        if not final:
            return
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    async def _writer(self) -> None:
        try:
            while True:
                await self._work.wait()
                self._work = trio.Event()
                batch, self._batch = self._batch, _Batch()
                try:
                    for start in range(0, len(batch.calls), WRITE_BATCH):
                        chunk = batch.calls[start : start + WRITE_BATCH]
                        await self._bus.run_scripts(chunk, what="write message statuses")
                except Exception as error:  # told to every final writer of the batch; the next goes on
                    log.error("writing %d message status(es) failed: %r", len(batch.calls), error)
                    batch.error = error
                finally:
                    batch.done.set()
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
