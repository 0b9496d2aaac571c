"""The hub's one reader: a single blocking wake-up over every stream any group of the hub
consumes, whatever the number of groups.

Redis cannot block one ``XREADGROUP`` over several consumer groups, so the reader does not read
for the groups: it waits. One ``XREAD COUNT 1 BLOCK`` (no group, nothing delivered, nothing to
ack) covers every stream on which some watcher (a subscription, or the watch of a lazy template)
has read everything there was; a watcher still catching up, or waiting for credit, is not waited
for. When Redis answers, each watcher that has not read past the entry that arrived is nudged,
and reads for itself with a non-blocking ``XREADGROUP`` on the bus's shared, pipelined
connection. So an idle hub makes one call per ``block`` seconds, and holds one connection for it.

Why no wake-up is ever missed: a watcher waits on a stream from its *position*, an entry id
below which its group has been delivered everything. A read that found everything there was
moves it to the stream's last entry at that read (``XREVRANGE + - COUNT 1``, pipelined just
before the ``XREADGROUP``), and stream ids only grow, so whatever the group has not been
delivered has a higher id, and Redis answers the ``XREAD`` for it.

A watcher that begins to wait while the ``XREAD`` is under way and not covering it rings the
hub's doorbell, a stream of its own (``<prefix>doorbell:<consumer>``, one entry, expiring) that
every ``XREAD`` also watches: the reader then asks again with the new set at once.

The periodic chores that used to run per group run here, once per hub, in one script call per
batch of groups: finding entries abandoned by dead hubs (`scripts.ABANDONED`) and noticing the
partition streams of topics that got some.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from redis.exceptions import ResponseError

from .options import text
from .wire import Command

if TYPE_CHECKING:
    from .streams import RedisStreamsBus

log = logging.getLogger("actionhub.redis")

#: (stream, group) pairs per call of the script that looks for abandoned entries.
SCAN_BATCH = 500


def id_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (``1700000000000-3`` -> (1700000000000, 3))."""
    ms, _, seq = text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def later_id(a: bytes, b: bytes | None) -> bytes:
    """The later of two entry ids."""
    return a if b is None or id_order(a) >= id_order(b) else b


class Watcher(abc.ABC):
    """What the reader waits for: something that reads some streams once they have new entries."""

    @abc.abstractmethod
    def position(self, stream: str) -> bytes | None:
        """The entry id from which this watcher waits on ``stream``; None while it does not wait
        on it (it is still reading, or out of credit)."""

    @abc.abstractmethod
    def nudge(self, stream: str) -> None:
        """``stream`` has an entry past `position`."""


class Reader:
    """The one blocking wake-up of a `RedisStreamsBus` (see the module's docstring)."""

    def __init__(self, bus: RedisStreamsBus) -> None:
        self.bus = bus
        self._watchers: dict[str, list[Watcher]] = {}
        self._changed = trio.Event()
        self._asking: dict[str, tuple[int, int]] | None = None  # the XREAD under way: stream -> from
        self._rung = False
        self._doorbell = ""
        self._doorbell_at = b"0-0"
        self._polling = False  # XREAD refused (an ACL without it): poll every `block` instead
        self.wakeups = 0  # XREADs answered, for tests and benchmarks

    # ------------------------------------------------------------------ watchers

    def watch(self, stream: str, watcher: Watcher) -> None:
        """Wait on ``stream`` for ``watcher`` (whenever it says it waits on it)."""
        watchers = self._watchers.setdefault(stream, [])
        if watcher not in watchers:
            watchers.append(watcher)

    def unwatch(self, stream: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(stream)
        if watchers is not None and watcher in watchers:
            watchers.remove(watcher)
            if not watchers:
                del self._watchers[stream]

    def waiting(self, stream: str, position: bytes) -> None:
        """A watcher has begun to wait on ``stream`` from ``position``: make sure the reader asks
        Redis about it (at once if the question under way does not cover it)."""
        asking = self._asking
        if asking is None:
            self._changed.set()
            return
        asked_from = asking.get(stream)
        if (asked_from is None or id_order(position) < asked_from) and not self._rung:
            self._rung = True
            assert self.bus._nursery is not None
            self.bus._nursery.start_soon(self._ring)

    async def _ring(self) -> None:
        bus = self.bus
        ring: list[Command] = [
            ("XADD", self._doorbell, "MAXLEN", 1, "*", "r", 1),
            ("EXPIRE", self._doorbell, 60),
        ]
        await bus.execute(ring, what="ring the reader's doorbell")

    # ------------------------------------------------------------------ the wake-up

    async def run(self) -> None:
        """Wait for new entries and nudge their watchers, until cancelled."""
        bus = self.bus
        self._doorbell = bus.keys.doorbell(bus.consumer)
        wire = bus.new_wire()  # a blocking read holds a connection: one of its own
        try:
            await bus.keep_running("waiting for messages", partial(self._wake_once, wire))
        finally:
            if wire is not None:
                wire.close()

    def _wanted(self) -> dict[str, bytes]:
        wanted: dict[str, bytes] = {}
        for stream, watchers in self._watchers.items():
            positions = [p for w in watchers if (p := w.position(stream)) is not None]
            if positions:
                wanted[stream] = min(positions, key=id_order)
        return wanted

    async def _wake_once(self, wire: Any) -> None:
        bus = self.bus
        wanted = self._wanted()
        if not wanted:
            await self._changed.wait()
            self._changed = trio.Event()
            return
        self._changed = trio.Event()
        if self._polling:
            await trio.sleep(bus.options.block)
            self._nudge_all(wanted)
            return
        streams = [*wanted, self._doorbell]
        ids = [*wanted.values(), self._doorbell_at]
        command = ("XREAD", "COUNT", 1, "BLOCK", int(bus.options.block * 1000), "STREAMS", *streams, *ids)
        self._asking = {stream: id_order(position) for stream, position in wanted.items()}
        self._rung = False
        try:
            if wire is not None:
                (reply,) = await bus.call_async(
                    partial(wire.execute, command, timeout=bus.options.block + 10), what="wait for messages"
                )
            else:
                reply = await bus.call(
                    partial(bus.client.execute_command, *command), what="wait for messages"
                )
        except ResponseError as error:
            if not str(error).startswith("NOPERM"):
                raise
            log.error(
                "redis refused XREAD (%s): this hub polls its groups every %s s instead; "
                "grant +xread and +xrevrange (see the README's least-privilege user)",
                error,
                bus.options.block,
            )
            self._polling = True
            return
        finally:
            self._asking = None
        self.wakeups += 1
        for stream, entries in _first_entries(reply):
            if stream == self._doorbell:
                self._doorbell_at = entries
                continue
            arrived = id_order(entries)
            for watcher in list(self._watchers.get(stream, ())):
                position = watcher.position(stream)
                if position is not None and id_order(position) < arrived:
                    watcher.nudge(stream)

    def _nudge_all(self, wanted: dict[str, bytes]) -> None:
        for stream in wanted:
            for watcher in list(self._watchers.get(stream, ())):
                if watcher.position(stream) is not None:
                    watcher.nudge(stream)


def _first_entries(reply: Any) -> Iterable[tuple[str, bytes]]:
    """(stream, id of the entry returned) of an ``XREAD COUNT 1`` reply, raw RESP2 or redis-py's."""
    if not reply:
        return ()
    streams: Sequence[Any] = list(reply.items()) if isinstance(reply, dict) else reply
    return [(text(stream), entries[0][0]) for stream, entries in streams if entries]
