"""How a bus confirms its writes by replicas (``durable=N``: `actionhub.bus.redis.durable`), with
trio: on the trio-driven connection in rounds (`Replication`), or on redis-py's thread path."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import redis
import trio
from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterError, MovedError

from ...errors import BusError
from ..url import redact
from .cluster_wire import ClusterWire
from .durable import Confirm, NotReplicated, confirm_tail, confirmed_count, mark_command, raise_nested
from .layout import ClusterKeys
from .options import pipelined
from .slots import command_keys, slot_of
from .wire import Command, Connection

if TYPE_CHECKING:
    from .connection import RedisConnection, Wire

log = logging.getLogger("actionhub.redis")


class _Round:
    """One ``WAIT`` that confirms the writes of every caller that joined it."""

    __slots__ = ("count", "done", "error", "mark", "on", "replicas")

    def __init__(self, mark: Command) -> None:
        self.mark = mark  # on a cluster, in the slot of the writes
        self.replicas = 0
        self.count = 0
        self.on: Connection | None = None  # the confirming connection its WAIT went out on
        self.error: BaseException | None = None
        self.done = trio.Event()


class Replication:
    """A bus's replicas: its confirmed writes, in rounds, and what it says of them.

    Rounds: a ``WAIT`` holds up every later command of its connection, so the confirmed writes of
    one connection, each with its own ``WAIT``, would go one replica round trip at a time. So,
    on the trio-driven path, a write finding no round under way goes out with its ``WAIT`` in one
    round trip on the confirming connection; while a round is under way, writes go out at once on
    the shared connection, and each joins the next round: the mark and one ``WAIT``, sent when
    the round under way returns, confirm all of them (Redis replicates in order, and the mark is
    written after their replies came). One round per replica round trip, however many writes. A
    round waits for the most replicas its writers asked: one asking fewer may wait out
    ``durable_timeout`` beside one asking more than there are.

    On a cluster (`ClusterWire`) rounds are per slot: a ``WAIT`` counts the writes of its own
    node, so each slot's writes join a round whose mark is in that slot, and its ``WAIT`` follows
    the mark to the slot's node.

    Said: once when writes stop being confirmed, once when they are again (a replica down or
    lagging is an outage of its own), for each number of replicas asked (writers asking 1 and 2
    of one replica are confirmed and not, at once: not a spell that ends and starts again)."""

    def __init__(self, bus: RedisConnection) -> None:
        self._bus = bus
        self._short: set[int] = set()  # the numbers of replicas asked that are not confirmed
        # per slot (None: one server), a round is under way on the confirming connection
        self._busy: set[int | None] = set()
        self._next: dict[int | None, _Round] = {}  # per slot, the round the writes made meanwhile joined

    async def write(
        self, commands: Sequence[Command], replicas: int, mark: Command | None
    ) -> tuple[list[Any], int]:
        """``commands`` confirmed by ``replicas`` on the trio-driven path: (their replies, the
        replicas that confirmed them). Raises only if the replies of ``commands`` did not come:
        a round that fails after they did confirms them by no replica."""
        bus = self._bus
        confirming, shared = bus.confirming_wire(), bus.wire
        assert confirming is not None and shared is not None, "the trio-driven path is closed"
        # one round per node: per slot on a cluster (the wire, not the layout: one server is one node)
        slot = slot_of(*commands) if isinstance(shared, ClusterWire) else None
        if slot not in self._busy:
            self._busy.add(slot)
            tail = confirm_tail(replicas, bus.options.durable_timeout, mark)
            try:
                return confirmed_count(await confirming.execute(*commands, *tail), tail)
            finally:
                self._ended(slot)
        # a WAIT counts the writes of its own server: the round confirms this write only on the
        # confirming connection open when it went out (not one made since: under Sentinel perhaps
        # to a new primary; but the first one, if being made) and to the server it went to
        confirming_at, confirming_generation = _where(confirming, slot)
        confirming_at = confirming_at or (None if confirming_generation else (1, None))
        shared_at, generation = _where(shared, slot)
        if isinstance(shared, ClusterWire):
            replies, redirected = await shared.execute_noting(*commands)
        else:
            replies, redirected = await shared.execute(*commands), False
        written_at, _ = _where(shared, slot)  # where the write went, if it stayed open or was made for it
        if redirected or (
            written_at != shared_at
            and not (shared_at is None and written_at and written_at[0] == generation + 1)
        ):
            written_at = None  # ASK keeps the map: the write ran elsewhere than _where says
        round_ = self._next.get(slot)
        if round_ is None:
            round_ = self._next[slot] = _Round(self._mark(commands))
        round_.replicas = max(round_.replicas, replicas)
        if slot not in self._busy:  # the round under way ended while this write went out
            self._ended(slot)
        await round_.done.wait()
        if round_.error is not None:
            # this write's own reply came: raising would have the caller write it again (a
            # second dead letter, a message requeued twice); unconfirmed, it resends only if
            # that is idempotent (a publish) and otherwise is said to be short
            log.debug("a round of confirmations failed: %r", round_.error)
            return replies, 0
        on = round_.on
        if on is None or confirming_at is None or written_at is None:
            return replies, 0  # not known to be on the server that confirmed: resent or said short
        if on[0] != confirming_at[0] or on[1] != written_at[1]:
            return replies, 0
        return replies, round_.count

    def _mark(self, commands: Sequence[Command]) -> Command:
        """The mark of a round, ``commands`` among its writes. The cluster layout (on a cluster
        or, its keys tagged all the same, on one server) puts it in the slot of their key."""
        if not isinstance(self._bus.keys, ClusterKeys):
            return mark_command(self._bus.keys)
        key = next(key for command in commands for key in command_keys(command))
        return mark_command(self._bus.keys, target=_text(key))

    def _ended(self, slot: int | None) -> None:
        """The round under way (of ``slot``) is over: send the next one, if writes joined it."""
        self._busy.discard(slot)
        round_ = self._next.pop(slot, None)
        nursery = self._bus._nursery
        if round_ is None:
            return
        if nursery is None:
            round_.error = redis.ConnectionError("the bus closed")
            round_.done.set()
            return
        self._busy.add(slot)
        nursery.start_soon(self._send, round_, slot)

    async def _send(self, round_: _Round, slot: int | None) -> None:
        bus = self._bus
        tail = confirm_tail(round_.replicas, bus.options.durable_timeout, round_.mark)
        try:
            confirming = bus.confirming_wire()
            if confirming is None:
                raise redis.ConnectionError("the bus closed")
            on, _ = _where(confirming, slot)
            if on is None:  # lost since the writes went out: a WAIT elsewhere confirms nothing of theirs
                raise redis.ConnectionError("the confirming connection was lost")
            count = int((await confirming.execute(*tail))[-1])  # 0 if the mark was redirected
            if _where(confirming, slot)[0] == on:  # else it reconnected: its WAIT's server is unknown
                round_.on, round_.count = on, count
        except Exception as error:  # each writer that joined it counts as unconfirmed
            round_.error = error
        except BaseException:  # cancelled: the bus is closing
            round_.error = redis.ConnectionError("the bus closed")
            raise
        finally:
            round_.done.set()
            self._ended(slot)

    def note(self, what: str, confirmed: int, wanted: int) -> bool:
        """Record how a confirmation went; whether it was confirmed."""
        extra = {"bus": redact(self._bus.url), "operation": what}
        if confirmed >= wanted:
            if wanted in self._short:
                self._short.discard(wanted)
                log.warning("replicas confirm durable=%d writes again (%s)", wanted, what, extra=extra)
            return True
        if wanted not in self._short:
            self._short.add(wanted)
            log.warning(
                "writes not confirmed by the replicas (%s): %d of %d within durable_timeout=%g s; "
                "a failover now could undo them",
                what,
                confirmed,
                wanted,
                self._bus.options.durable_timeout,
                extra=extra,
            )
        return False


async def confirmed(
    bus: RedisConnection,
    commands: Sequence[Command],
    replicas: int,
    *,
    mark: Command | None = None,
    scripts: Sequence[Any] = (),
) -> tuple[list[Any], int]:
    """``commands`` then (``mark`` and) ``WAIT replicas`` in one round trip, on one connection:
    (the replies of ``commands``, the replicas that confirmed them). One attempt: the transient
    errors are the caller's (`RedisConnection.call_async`). ``scripts``: the registered scripts
    whose EVALSHA ``commands`` hold, loaded again if Redis lost them."""
    try:
        return await _send(bus, commands, replicas, mark)
    except redis.exceptions.NoScriptError:
        if not scripts:
            raise
        await bus.load_scripts(scripts, what="load scripts")  # on every primary of a cluster
        return await _send(bus, commands, replicas, mark)


async def durably(
    bus: RedisConnection,
    commands: Sequence[Command],
    confirm: Confirm,
    *,
    what: str,
    scripts: Sequence[Any] = (),
) -> list[Any]:
    """`confirmed`, raising `NotReplicated` when short: one attempt of a publish."""
    replicas = confirm.replicas
    replies, count = await confirmed(bus, commands, replicas, mark=confirm.mark, scripts=scripts)
    if not bus.replication.note(what, count, replicas):
        raise NotReplicated(count, replicas, bus.options.durable_timeout)
    return replies


async def confirmed_move(
    bus: RedisConnection, commands: Sequence[Command], *, what: str, scripts: Sequence[Any] = ()
) -> list[Any]:
    """A move (a message's new place and the ack of its old one, atomically: a script or a
    transaction) confirmed by the URL's ``durable`` replicas; their replies. Short is said (once),
    not retried: a failover can only undo the whole move, so the message runs again, never is lost."""
    replicas = bus.options.durable
    replies, count = await bus.call_async(
        partial(confirmed, bus, commands, replicas, scripts=scripts), what=what
    )
    bus.replication.note(what, count, replicas)
    return replies


async def requeue_confirmed(
    bus: RedisConnection, commands: Sequence[Command], *, transaction: bool = True
) -> None:
    """Requeue dead letters (``commands``, one transaction unless ``transaction`` is False)
    confirmed by the URL's ``durable`` replicas; `BusError` if fewer confirm (a failover now could
    put them back among the dead letters: the operator is told, rather than a log)."""
    what = "requeue dead letters"
    replicas = bus.options.durable
    sent: list[Command] = [("MULTI",), *commands, ("EXEC",)] if transaction else list(commands)
    replies, count = await bus.call_async(partial(confirmed, bus, sent, replicas), what=what)
    if transaction:
        raise_nested(replies[-1])
    if not bus.replication.note(what, count, replicas):
        error = NotReplicated(count, replicas, bus.options.durable_timeout)
        raise BusError(f"{what} may not be durable: {error}; a failover now could undo it")


async def _send(
    bus: RedisConnection, commands: Sequence[Command], replicas: int, mark: Command | None
) -> tuple[list[Any], int]:
    if bus.wire is not None:
        return await bus.replication.write(commands, replicas, mark)
    tail = confirm_tail(replicas, bus.options.durable_timeout, mark)
    if isinstance(bus.client, RedisCluster):
        run = partial(on_node, bus.client, [*commands, *tail])
    else:
        run = partial(pipelined, bus.client, [*commands, *tail])  # on one pooled connection
    # a WAIT may block for durable_timeout: not among the few calls at once of the thread path
    replies = await trio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=bus._blocking_threads)
    return confirmed_count(replies, tail)


def _where(wire: Wire, slot: int | None) -> tuple[Connection | None, int]:
    """The connection of ``wire`` that commands of ``slot`` go out on now, and its generation:
    `WireConnection.connection`, or on a cluster that of the slot's node."""
    node = wire.node(slot) if isinstance(wire, ClusterWire) else wire
    return (None, 0) if node is None else (node.connection, node.generation)


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def on_node(client: RedisCluster, commands: Sequence[Command]) -> list[Any]:
    """``commands`` (a write and its ``WAIT``) pipelined on one connection of the primary of their
    slot (blocking). redis-py's cluster pipeline cannot route ``WAIT`` (it has no key), and a
    ``WAIT`` counts only the writes of its own connection, so the write and its ``WAIT`` go to
    the node's own client. A redirection (the slot moved, or is migrating) fails the call as
    transient, the slot map refreshed, to be sent again (a publish as a resend, which writes
    nothing if its entry is there): the pipeline is no transaction, so its write may have run
    there while only the mark was redirected (``ASK`` is per key), and its ``WAIT`` is not
    counted either way."""
    slot = slot_of(*commands)
    if slot is None:
        raise ValueError("a confirmed write must touch a key")
    node = client.nodes_manager.get_node_from_slot(slot)
    try:
        return pipelined(node.redis_connection, commands)
    except (MovedError, AskError) as error:
        client.nodes_manager.initialize()
        raise ClusterError(f"slot {slot} moved: {error}") from error
