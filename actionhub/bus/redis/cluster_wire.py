"""A Redis Cluster connection driven by trio: `WireConnection`'s contract over every primary.

`ClusterWire.execute` takes the same batches as `WireConnection.execute` and gives the same
replies in the same order, though their commands now go to the nodes owning their keys' slots:
each node's share goes out in one write on that node's one pipelined connection, all nodes at
once. A ``MULTI`` ... ``EXEC`` block is one unit, routed by its inner commands' slot. A keyless
command (``PING``, ``WAIT``, ``SCRIPT LOAD``, ``EVALSHA sha 0``) follows the keyed command before
it in the batch, so ``WAIT`` counts the replicas of the node that took the write; with none
before it, it goes to the first primary. A ``WAIT`` of a batch in which any command was redirected
replies 0: ``ASK`` is per key, so the write may have run on the migrating node and its mark on the
importing one, and a ``WAIT`` there would count the wrong node's replicas (`execute_noting` says
whether a batch was redirected, for a write whose ``WAIT`` goes out in a later batch).

Redirections are followed per command, so one moved key does not fail its batch: ``MOVED``
updates the slot, asks for a refresh and resends there (at most `MAX_HOPS` redirections);
``ASK`` resends with ``ASKING`` (before ``MULTI`` for a block) to the importing node, the map
unchanged; ``TRYAGAIN`` (a multi-key command on a slot half migrated) resends after 25 ms x 2^n,
`TRYAGAIN_TRIES` times; ``NOSCRIPT`` on an ``EVALSHA`` loads the script `register`-ed under that
sha on that node and resends (inside ``MULTI`` the others ran already: it is loaded for the next
time and the error stays in ``EXEC``'s reply, as on one node).

Errors are redis-py's, raised after every node's replies are in: a connection error (a node
lost: failover) first, as the batch is then to be retried, else the first error reply in the
caller's order. Cluster states that pass are redis-py's `ClusterDownError` (``CLUSTERDOWN``, or
no node known for a slot), `TryAgainError` (still ``TRYAGAIN``) and `ClusterError` (too many
redirections): the bus treats them as transient.

The slot map comes from ``CLUSTER SHARDS`` (``CLUSTER SLOTS`` before Redis 7) asked of a known
node (primaries, then seeds, then replicas); refreshes are single-flight, at most 4 a second,
after each ``MOVED`` and connection error, and every 30 s.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import hiredis
import redis
import trio
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)

from .slots import Address, SlotMap, command_keys, key_slot, slot_of
from .wire import Command, Connection, WireConnection, WireParams

if TYPE_CHECKING:
    from .dedicated_wire import DedicatedWire

log = logging.getLogger("actionhub.redis")

#: Redirections (MOVED, ASK) one command follows before `ClusterError`.
MAX_HOPS = 5
#: Resends after TRYAGAIN, 25 ms x 2^n apart, before `TryAgainError` is raised.
TRYAGAIN_TRIES = 4
TRYAGAIN_BACKOFF = 0.025
#: Least time between two refreshes of the slot map (at most 4 a second), and most.
REFRESH_INTERVAL = 0.25
REFRESH_PERIOD = 30.0

#: What a reply is when the connection it was to come on failed (a node lost).
LOST = (redis.ConnectionError, redis.TimeoutError)


def _text(arg: Any) -> str:
    return arg.decode() if isinstance(arg, bytes) else str(arg)


def _name(command: Command) -> bytes:
    first = command[0]
    return (first if isinstance(first, bytes) else str(first).encode()).upper()


@attrs.define(eq=False)
class _Unit:
    """A command, or a ``MULTI`` block, of a batch: where it goes and how far it got."""

    start: int  # its commands are the batch's [start:stop]
    stop: int
    slot: int | None
    anchor: _Unit | None  # keyless: the keyed unit before it, whose node it follows
    address: Address | None = None  # where it went last
    ask: Address | None = None  # ASK: where it goes next, after ASKING
    hops: int = 0
    tries: int = 0  # TRYAGAINs
    reloaded: bool = False  # NOSCRIPT: loaded once already


def units_of(commands: Sequence[Command]) -> list[_Unit]:
    """``commands`` cut into units: one per command, one per ``MULTI`` ... ``EXEC`` block; a
    cross-slot unit (a bug) raises `BusError` before anything is sent."""
    units: list[_Unit] = []
    anchor: _Unit | None = None
    at = 0
    while at < len(commands):
        stop = at + 1
        if _name(commands[at]) == b"MULTI":
            while stop < len(commands) and _name(commands[stop - 1]) not in (b"EXEC", b"DISCARD"):
                stop += 1
        if stop == at + 1 and len(keys := command_keys(commands[at])) == 1:
            slot: int | None = key_slot(keys[0])  # the common case, without slot_of's checks
        else:
            slot = slot_of(*commands[at:stop])
        unit = _Unit(at, stop, slot, anchor if slot is None else None)
        if slot is not None:
            anchor = unit
        units.append(unit)
        at = stop
    return units


class ClusterWire:
    """Pipelined connections to every primary of a Redis Cluster, made on demand, read by tasks
    in ``nursery``; ``seeds``: nodes to learn the cluster from (any, primaries or replicas).
    ``params``: credentials, client name and timeouts, as for `WireConnection` (host, port, path,
    db and Sentinel are ignored: a cluster has one database)."""

    def __init__(
        self,
        params: WireParams,
        seeds: Sequence[Address],
        nursery: trio.Nursery,
        *,
        scripts: Iterable[str | bytes] = (),
    ) -> None:
        if not seeds:
            raise ValueError("a ClusterWire needs at least one seed node")
        self._params = attrs.evolve(params, path=None, db=0, primary=None)
        self._seeds = [(host, int(port)) for host, port in seeds]
        self._nursery = nursery
        self._nodes: dict[Address, WireConnection] = {}
        self._dedicated: set[DedicatedWire] = set()  # open: their readers run in ``nursery``
        self._scripts: dict[str, bytes] = {}
        for source in scripts:
            self.register(source)
        self._map: SlotMap | None = None
        self._primaries: list[Address] = []
        self._refresh_lock = trio.Lock()
        self._refreshes = 0  # counts refreshes attempted (a refresh joined need not run again)
        self._refreshed_at = -REFRESH_INTERVAL
        self._wanted = trio.Event()
        self._closed = False
        self._scope = trio.CancelScope()
        nursery.start_soon(self._refresher)

    # -- the contract of WireConnection

    async def execute(self, *commands: Command, timeout: float | None = None) -> list[Any]:
        """Send ``commands`` to the nodes owning their slots, each node's share in one write;
        their replies, in order. Raises as `WireConnection.execute` does, once every node's
        replies are in (module docstring)."""
        return (await self.execute_noting(*commands, timeout=timeout))[0]

    async def execute_noting(
        self, *commands: Command, timeout: float | None = None
    ) -> tuple[list[Any], bool]:
        """`execute`: its replies, and whether any command was redirected (``MOVED``, ``ASK``),
        so ran elsewhere than `connection_of` its slot says (its ``WAIT`` replies are then 0)."""
        if not commands:
            return [], False
        if len(commands) == 1 and (got := await self._one(commands[0], timeout)) is not None:
            return got
        units = units_of(commands)
        replies = await self._execute(commands, units, [None] * len(commands), timeout)
        if not any(unit.hops for unit in units):
            return replies, False
        for unit in units:  # the write and the WAIT's anchor may have run on two nodes
            if unit.slot is None and unit.stop == unit.start + 1 and _name(commands[unit.start]) == b"WAIT":
                replies[unit.start] = 0
        return replies, True

    async def _one(self, command: Command, timeout: float | None) -> tuple[list[Any], bool] | None:
        """The hot path's common call, one command of one key to a node known to own it: its
        reply (and whether redirected), without `execute`'s bookkeeping; None if it is not such a
        call (nothing sent)."""
        slot_map = self._map
        keys = command_keys(command)
        if slot_map is None or len(keys) != 1 or _name(command) == b"MULTI":
            return None
        slot = key_slot(keys[0])
        address = slot_map.node_of(slot)
        if address is None:
            return None
        unit = _Unit(0, 1, slot, None, address)
        wire = self._wire(address)
        try:
            got = await wire.execute(command, timeout=timeout, errors_in_place=True)
        except LOST:
            self.refresh_soon()
            raise
        if not isinstance(got[0], Exception):
            return got, False
        if not await self._again(unit, got, (command,), wire):
            raise got[0]
        got = await self._execute((command,), [unit], [None], timeout)  # redirected, TRYAGAIN, ...
        return got, unit.hops > 0

    async def _execute(
        self, commands: Sequence[Command], pending: list[_Unit], replies: list[Any], timeout: float | None
    ) -> list[Any]:
        if any(unit.tries for unit in pending):
            await trio.sleep(TRYAGAIN_BACKOFF * 2 ** (max(unit.tries for unit in pending) - 1))
        while pending:
            groups: dict[Address, list[_Unit]] = {}
            for unit in pending:
                address = await self._route(unit, replies)
                if address is not None:
                    groups.setdefault(address, []).append(unit)
            retry: list[_Unit] = []
            if len(groups) == 1:  # no task to start
                ((address, group),) = groups.items()
                await self._send(address, group, commands, replies, retry, timeout)
            else:
                async with trio.open_nursery() as nursery:
                    for address, group in groups.items():
                        nursery.start_soon(self._send, address, group, commands, replies, retry, timeout)
            again = set(map(id, retry))
            again |= {id(u) for u in pending if u.anchor is not None and id(u.anchor) in again}
            pending = [unit for unit in pending if id(unit) in again]
            if any(unit.tries for unit in retry):
                await trio.sleep(TRYAGAIN_BACKOFF * 2 ** (max(unit.tries for unit in retry) - 1))
        lost = next((reply for reply in replies if isinstance(reply, LOST)), None)
        error = lost or next((reply for reply in replies if isinstance(reply, Exception)), None)
        if error is not None:
            raise error
        return replies

    async def _route(self, unit: _Unit, replies: list[Any]) -> Address | None:
        """Where ``unit`` goes now; None (its replies set to `ClusterDownError`) if nowhere."""
        if unit.ask is not None:
            unit.address = unit.ask
        elif unit.slot is None:
            unit.address = unit.anchor.address if unit.anchor is not None else await self._any()
        else:
            slot_map = self._map or await self._first_map()
            unit.address = slot_map.node_of(unit.slot)
            if unit.address is None:
                self.refresh_soon()
                replies[unit.start : unit.stop] = [ClusterDownError(f"no node serves slot {unit.slot}")] * (
                    unit.stop - unit.start
                )
        return unit.address

    async def _send(
        self,
        address: Address,
        group: list[_Unit],
        commands: Sequence[Command],
        replies: list[Any],
        retry: list[_Unit],
        timeout: float | None,
    ) -> None:
        """One node's share of a batch, in one write; each unit's replies put in place, or the
        unit in ``retry`` if it is to be sent again (redirected, TRYAGAIN, NOSCRIPT)."""
        batch: list[Command] = []
        for unit in group:
            if unit.ask is not None:
                batch.append(("ASKING",))
            batch += commands[unit.start : unit.stop]
        try:
            wire = self._wire(address)
            got = await wire.execute(*batch, timeout=timeout, errors_in_place=True)
        except redis.RedisError as error:  # lost (failover), or a handshake refused
            if isinstance(error, LOST):
                self.refresh_soon()
            for unit in group:
                replies[unit.start : unit.stop] = [error] * (unit.stop - unit.start)
            return
        clean = not any(isinstance(reply, ResponseError) for reply in got)  # the common case
        at = 0
        for unit in group:
            if unit.ask is not None:
                at += 1  # ASKING's OK
                unit.ask = None
            size = unit.stop - unit.start
            part = got[at : at + size]
            at += size
            # a block's EXEC may hold a NOSCRIPT, nested
            if not (clean and size == 1) and await self._again(unit, part, commands, wire):
                retry.append(unit)
            else:
                replies[unit.start : unit.stop] = part

    async def _again(
        self, unit: _Unit, part: list[Any], commands: Sequence[Command], wire: WireConnection
    ) -> bool:
        """Whether ``unit``, answered ``part``, is to be sent again; the redirection noted."""
        error = next((reply for reply in part if isinstance(reply, (AskError, TryAgainError))), None)
        if isinstance(error, AskError):  # MOVED is an AskError too
            unit.hops += 1
            if unit.hops > MAX_HOPS:
                part[part.index(error)] = ClusterError(f"too many redirections ({MAX_HOPS}): {error}")
                return False
            address = (error.host or (unit.address or ("", 0))[0], error.port)
            if isinstance(error, MovedError):
                if self._map is not None:
                    self._map.moved(error.slot_id, address)
                self.refresh_soon()
            else:
                unit.ask = address
            return True
        if isinstance(error, TryAgainError):
            unit.tries += 1
            return unit.tries <= TRYAGAIN_TRIES
        return await self._noscript(unit, part, commands, wire)

    async def _noscript(
        self, unit: _Unit, part: list[Any], commands: Sequence[Command], wire: WireConnection
    ) -> bool:
        """NOSCRIPT: load the script on the node; whether to resend (not a ``MULTI`` block)."""
        block = unit.stop - unit.start > 1
        if block:
            nested = part[-1] if isinstance(part[-1], list) else []
            pairs = zip(commands[unit.start + 1 : unit.stop - 1], nested, strict=False)
            missing = [
                command
                for command, reply in pairs
                if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")
            ]
        else:
            missing = [commands[unit.start]] if isinstance(part[0], NoScriptError) else []
        shas = dict.fromkeys(_text(c[1]).lower() for c in missing if _name(c) in (b"EVALSHA", b"EVALSHA_RO"))
        sources = [self._scripts[sha] for sha in shas if sha in self._scripts]
        if not sources or unit.reloaded:
            return False
        unit.reloaded = True
        try:
            await wire.execute(*(("SCRIPT", "LOAD", source) for source in sources))
        except redis.RedisError as error:
            log.debug("could not load a script again: %r", error)
            return False
        return not block

    # -- scripts

    def register(self, source: str | bytes) -> str:
        """Remember the script ``source``, so a node that answers NOSCRIPT to its ``EVALSHA``
        gets it loaded and the command again; its sha (hex), for ``EVALSHA``."""
        data = source.encode() if isinstance(source, str) else source
        sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        self._scripts[sha] = data
        return sha

    # -- the slot map

    @property
    def slot_map(self) -> SlotMap | None:
        """The slot map known now (None before the first refresh)."""
        return self._map

    def connection_of(self, slot: int | None) -> Connection | None:
        """The per-node equivalent of `WireConnection.connection`: the (generation, address) of
        the connection now open to the node owning ``slot`` (the first primary for None), None if
        there is none. The same before and after a call if the call's commands of ``slot`` went
        out on it (not if they were redirected, or it reconnected)."""
        wire = self.node(slot)
        return None if wire is None else wire.connection

    def node(self, slot: int | None) -> WireConnection | None:
        """The connection (open or not) to the node owning ``slot`` (the first primary for
        None), None if there is none yet: its `WireConnection.connection` and ``generation``
        say whether a call's commands of ``slot`` went out on one connection."""
        if self._map is None:
            return None
        address = self._map.node_of(slot) if slot is not None else next(iter(self._primaries), None)
        return self._nodes.get(address) if address is not None else None

    async def owner(self, slot: int | None) -> Address:
        """The primary owning ``slot`` (any for None), after a first refresh if need be;
        `ClusterDownError` if none does."""
        if slot is None:
            return await self._any()
        address = (self._map or await self._first_map()).node_of(slot)
        if address is None:
            self.refresh_soon()
            raise ClusterDownError(f"no node serves slot {slot}")
        return address

    async def _any(self) -> Address:
        if self._map is None:
            await self._first_map()
        if not self._primaries:
            raise ClusterDownError("no primary serves any slot")
        return self._primaries[0]

    async def _first_map(self) -> SlotMap:
        await self.refresh()
        if self._map is None:
            raise redis.ConnectionError("no node of the Redis Cluster could be asked for its slots")
        return self._map

    def refresh_soon(self) -> None:
        """Have the slot map refreshed in the background (at most 4 times a second)."""
        self._wanted.set()

    async def refresh(self) -> None:
        """Refresh the slot map now: single-flight (who comes while one runs waits for it and
        does not run another), at least `REFRESH_INTERVAL` after the previous one. Raises
        ConnectionError if no known node answers."""
        count = self._refreshes
        async with self._refresh_lock:
            if self._refreshes != count:
                return
            await trio.sleep_until(self._refreshed_at + REFRESH_INTERVAL)
            try:
                await self._load_map()
            finally:
                self._refreshes += 1
                self._refreshed_at = trio.current_time()

    async def _load_map(self) -> None:
        known = self._map
        candidates = [*(known.primaries if known else []), *self._seeds]
        candidates += [r for replicas in (known.replicas.values() if known else []) for r in replicas]
        problem: BaseException | None = None
        for address in dict.fromkeys(candidates):
            try:
                slot_map = await self._ask_slots(address)
            except redis.RedisError as error:
                problem = error
                continue
            if slot_map.primaries:
                self._map, self._primaries = slot_map, slot_map.primaries
                for gone in self._nodes.keys() - set(self._primaries):
                    self._nodes.pop(gone).close()
                return
        raise redis.ConnectionError(f"no node of the Redis Cluster answered CLUSTER SHARDS: {problem!r}")

    async def _ask_slots(self, address: Address) -> SlotMap:
        wire = self._wire(address)
        timeout = self._params.connect_timeout
        try:
            (reply,) = await wire.execute(("CLUSTER", "SHARDS"), timeout=timeout)
            return SlotMap.from_shards(reply, address[0])
        except ResponseError as error:
            if "unknown subcommand" not in str(error).lower():
                raise
        (reply,) = await wire.execute(("CLUSTER", "SLOTS"), timeout=timeout)
        return SlotMap.from_slots(reply, address[0])

    async def _refresher(self) -> None:
        with self._scope:
            while True:
                with trio.move_on_after(REFRESH_PERIOD):
                    await self._wanted.wait()
                self._wanted = trio.Event()
                try:
                    await self.refresh()
                except redis.RedisError as error:
                    log.debug("refreshing the Redis Cluster's slots failed: %r", error)

    # -- connections

    def _wire(self, address: Address) -> WireConnection:
        wire = self._nodes.get(address)
        if wire is None:
            if self._closed:
                raise redis.ConnectionError("the cluster connection is closed")
            wire = self._nodes[address] = self.new_wire(address)
        return wire

    def new_wire(self, address: Address) -> WireConnection:
        """A `WireConnection` of its own to the node at ``address``, with this one's credentials."""
        return WireConnection(attrs.evolve(self._params, host=address[0], port=address[1]), self._nursery)

    def dedicated(self, slot: int | None) -> DedicatedWire:
        """A connection of its own for blocking reads of ``slot`` (XREAD BLOCK, ...), to the
        slot's owner, re-targeted when it moves or its node is lost."""
        from .dedicated_wire import DedicatedWire  # it builds on this module

        return DedicatedWire(self, slot)

    def close(self) -> None:
        """Close every connection, the dedicated ones too; callers waiting get ConnectionError."""
        self._closed = True
        self._scope.cancel()
        for wire in self._nodes.values():
            wire.close()
        self._nodes.clear()
        for dedicated in list(self._dedicated):
            dedicated.close()
