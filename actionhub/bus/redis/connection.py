"""How a Redis bus talks to Redis from trio: the connection, thread hops, retries, lifecycle.

redis-py's client is synchronous; its calls run in a worker thread (``trio.to_thread``), one
hop per batch, never one per message on the consuming path. The hot path (publish, read, ack)
runs on `WireConnection`s instead, driven by trio itself, where the client's options allow (on
a Redis Cluster, a `ClusterWire` over every primary, with `DedicatedWire`s for blocking reads).
A dropped connection or a Redis restart is retried with backoff and logged once per outage;
nothing in flight is acked meanwhile.
"""

from __future__ import annotations

import functools
import logging
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, ParamSpec, TypeVar, cast

import trio
from redis.cluster import RedisCluster
from redis.exceptions import AuthenticationError, AuthorizationError, NoScriptError

from ...errors import BusError
from ...supervision.policy import Backoff
from ..base import Bus
from ..url import redact
from .cluster import REDIS_ERRORS, is_cluster_url, parse_cluster_url
from .cluster_wire import ClusterWire
from .dedicated_wire import DedicatedWire
from .durable import NotReplicated
from .layout import check_layout, keys_for
from .options import (
    RedisOptions,
    bus_error,
    client_options,
    connect,
    consumer_name,
    describe,
    is_transient,
    pipelined,
    refuses_writes,
)
from .replication import Replication
from .sentinel import close_client, follow_primary
from .wire import Command, WireConnection, WireParams, wire_params

log = logging.getLogger("actionhub.redis")

#: redis-py calls a bus runs in threads at once (each holds a pooled connection meanwhile).
CALLS_AT_ONCE = 4

#: The most seconds between two retries through an outage of a cluster: a failover promotes a
#: replica within a few seconds, and its slots should take calls soon after (one node's outage
#: costs the others nothing; the trio-driven connection refreshes the slots at most 4 times a second).
CLUSTER_MAX_BACKOFF = 0.5

#: A trio-driven connection shared by the hot path: to one server, or to a cluster's primaries.
Wire = WireConnection | ClusterWire

T = TypeVar("T")
P = ParamSpec("P")


def refusals_as_bus_errors(
    what: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """A bus call (its first argument the bus) raising `BusError` for what Redis refuses (out of
    memory, a wrong type), as the clients do, instead of redis-py's own exceptions: what Redis
    cannot take right now is retried and becomes a `BusError` at its deadline already."""

    def decorate(call: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(call)
        async def refusing(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await call(*args, **kwargs)
            except REDIS_ERRORS as error:
                raise bus_error(error, what, cast(RedisConnection, args[0]).url) from error

        return refusing

    return decorate


class RedisConnection(Bus):
    """A Redis bus's connection: calls from trio (in threads, or on the trio-driven
    connections), retried through outages, and the bus's lifecycle around them."""

    def __init__(self, url: str, redis_url: str, options: RedisOptions, *, client: Any = None) -> None:
        self.url = url
        self.options = options
        self.prefix = options.prefix
        self.keys = keys_for(options)
        # redis-py's stubs type replies loosely; `client` lets tests pass a fakeredis client
        self.client: Any = client if client is not None else connect(redis_url, options)
        cluster = client is None and is_cluster_url(redis_url)
        # a cluster's nodes fail one at a time: a call to a live one says nothing of a dead one
        self._outage_ends_on_retry = is_cluster_url(redis_url)
        self._backoff = Backoff(0.05, CLUSTER_MAX_BACKOFF if cluster else 5.0, 0.2)
        # each call in a thread holds one of the client's pooled connections: a few at once
        # whatever the number of groups; calls that block in Redis have threads of their own
        self._threads = trio.CapacityLimiter(CALLS_AT_ONCE)
        self._blocking_threads = trio.CapacityLimiter(512)
        self._outage = False
        self._refusing: str | None = None  # the call that met NOREPLICAS first, until it goes through
        self._outage_began = -math.inf  # trio time at which the current (or last) outage began
        self.reachable_since = -math.inf  # trio time at which the last outage ended
        self._nursery: trio.Nursery | None = None
        self._wire_params: WireParams | None
        self._seeds: tuple[tuple[str, int], ...] = ()  # a cluster's, on the trio-driven path
        if cluster:
            parsed = parse_cluster_url(redis_url)
            self._wire_params, self._seeds = parsed.wire_params(client_options(options)), parsed.nodes
        else:
            self._wire_params = wire_params(self.client)
        self.wire: Wire | None = None  # shared, pipelined, while open (if possible)
        self._wires: weakref.WeakSet[WireConnection] = weakref.WeakSet()  # every one made
        self._confirming: Wire | None = None  # writes with their WAIT (replication.py)
        self._registered: dict[str, bytes | str] = {}  # sha -> source: what a cluster wire loads again
        self.replication = Replication(self)
        self.consumer = ""

    @property
    def connected(self) -> bool:
        return not self._outage

    # ------------------------------------------------------------------ calls from trio

    async def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        deadline: float | None = None,
        blocks: bool = False,
        again: Callable[[float], Awaitable[T]] | None = None,
    ) -> T:
        """Run the blocking ``fn`` in a thread; while Redis is unreachable, retry with backoff
        (until ``deadline``, a trio time, then `BusError`). ``blocks``: ``fn`` waits in Redis
        (BLPOP, a pub/sub read), so it does not count against the calls at once. ``again``: see
        `call_async`."""
        limiter = self._blocking_threads if blocks else self._threads
        return await self.call_async(
            partial(trio.to_thread.run_sync, fn, abandon_on_cancel=True, limiter=limiter),
            what=what,
            deadline=deadline,
            again=again,
        )

    async def execute(
        self, commands: Sequence[Command], *, what: str, deadline: float | None = None
    ) -> list[Any]:
        """``commands`` in one round trip (pipelined, not a transaction): their replies. On the
        shared wire connection when there is one."""
        if not commands:  # nothing sent proves nothing: an outage must not seem to end here
            return []
        wire = self.wire
        if wire is not None:
            return await self.call_async(partial(wire.execute, *commands), what=what, deadline=deadline)
        return await self.call(partial(pipelined, self.client, commands), what=what, deadline=deadline)

    async def run_scripts(
        self,
        calls: Sequence[tuple[Any, Sequence[Any], Sequence[Any]]],
        *,
        what: str,
        also: Sequence[Command] = (),
        deadline: float | None = None,
    ) -> list[Any]:
        """Run registered scripts, each ``(script, keys, args)``, and then the commands ``also``,
        in one round trip; their replies."""
        commands: list[Command] = [
            ("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in calls
        ]
        commands += also
        try:
            return await self.execute(commands, what=what, deadline=deadline)
        except NoScriptError:  # Redis restarted, or SCRIPT FLUSH: load them again
            await self.load_scripts([script for script, _, _ in calls], what=what, deadline=deadline)
            return await self.execute(commands, what=what, deadline=deadline)

    async def load_scripts(self, scripts: Sequence[Any], *, what: str, deadline: float | None = None) -> None:
        """Have ``scripts`` (redis-py `Script`s) loaded again after a NOSCRIPT. On a cluster's
        trio-driven connection they are registered with it, which loads each on the node that
        lacks it when a call is sent again (a bare ``SCRIPT LOAD`` would reach one node); on the
        thread path, redis-py's cluster client loads them on every primary."""
        if isinstance(self.wire, ClusterWire):
            self._registered.update((script.sha, script.script) for script in scripts)
            for wire in (self.wire, self._confirming):
                if isinstance(wire, ClusterWire):
                    for source in self._registered.values():
                        wire.register(source)
            return
        if self._seeds or isinstance(self.client, RedisCluster):
            await self.call(lambda: [self.client.script_load(s.script) for s in scripts], what=what)
            return
        sources = {script.sha: script.script for script in scripts}
        load: list[Command] = [("SCRIPT", "LOAD", source) for source in sources.values()]
        await self.execute(load, what=what, deadline=deadline)

    async def call_async(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        what: str,
        deadline: float | None = None,
        again: Callable[[float], Awaitable[T]] | None = None,
    ) -> T:
        """`call` for a call that needs no thread (say, on a `WireConnection`). ``again``: what
        a retry runs instead of ``fn``, given the seconds since ``fn`` was first sent (a write that
        must not happen twice: `send_once`)."""
        failures = 0
        started = 0.0 if again is None else trio.current_time()
        while True:
            attempt = trio.current_time()
            try:
                if failures and again is not None:
                    result = await again(trio.current_time() - started)
                else:
                    result = await fn()
            except (AuthenticationError, AuthorizationError) as error:  # retrying will not help
                raise BusError(f"redis refused {what}: {error}") from error
            except NotReplicated as error:  # on the primary, maybe on no replica: resend
                failures += 1
                if deadline is None or trio.current_time() >= deadline:
                    raise BusError(
                        f"{what} may not be durable: {error}, each time for publish_timeout="
                        f"{self.options.publish_timeout:g} s; are {error.wanted} replica(s) attached "
                        "to the primary and in sync (INFO replication)?"
                    ) from error
                await trio.sleep(self._backoff.delay(failures))
                continue
            except REDIS_ERRORS as error:
                if not is_transient(error):
                    raise
                failures += 1
                if refuses_writes(error):  # Redis answers, but takes no write: its own spell
                    if self._refusing is None:
                        self._refusing = what
                        log.warning(
                            "redis refuses writes (%s): %s; retrying with backoff",
                            what,
                            describe(error),
                            extra={"bus": redact(self.url), "operation": what},
                        )
                elif not self._outage:
                    self._outage = True
                    self._outage_began = trio.current_time()
                    log.warning(
                        "redis unreachable (%s): %s; retrying with backoff",
                        what,
                        describe(error),
                        extra={"bus": redact(self.url), "operation": what},
                    )
                if deadline is not None and trio.current_time() >= deadline:
                    if refuses_writes(error):
                        raise BusError(
                            f"redis refused {what} until its deadline: {describe(error)} (fewer "
                            "replicas attached than its min-replicas-to-write asks for)"
                        ) from error
                    raise BusError(f"redis unreachable for {what}: {describe(error)}") from error
                await trio.sleep(self._backoff.delay(failures))
                continue
            # a call sent before the outage began may still succeed (its reply was on its way):
            # only one sent since says that Redis is back; on a cluster, only one that met the
            # outage itself (another may have gone to a node that never left)
            if what == self._refusing:  # the write refused first went through: the spell is over
                self._refusing = None
                log.warning(
                    "redis takes writes again (%s)", what, extra={"bus": redact(self.url), "operation": what}
                )
            if (
                self._outage
                and attempt >= self._outage_began
                and (failures or not self._outage_ends_on_retry)
            ):
                self._outage = False
                self.reachable_since = trio.current_time()
                log.warning(
                    "redis reachable again (%s)", what, extra={"bus": redact(self.url), "operation": what}
                )
            return result

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def open(
        self, consumer: str = "actionhub", *, connect_timeout: float = 10.0, serving: bool = True
    ) -> AsyncIterator[None]:
        self.consumer = consumer_name(consumer)
        await self.call(self.client.ping, what="connect", deadline=trio.current_time() + connect_timeout)
        await self.call(partial(check_layout, self.client, self.keys), what="check the key layout")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.wire = self._shared_wire()
                nursery.start_soon(follow_primary, self.client, self._leave, redact(self.url))
                if serving:
                    await self._start_background(nursery)
                try:
                    yield
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):
                        await self._before_close()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            for wire in (self.wire, self._confirming):
                if isinstance(wire, ClusterWire):
                    wire.close()
            self.wire = self._confirming = None
            close_client(self.client)

    def _shared_wire(self) -> Wire | None:
        """A pipelined connection driven by trio (for a cluster, to every primary), if the
        client's options allow one and the bus is open; None: use the thread path."""
        if self._wire_params is None or self._nursery is None:
            return None
        if not self._seeds:
            return self._server_wire(self._wire_params, self._nursery)
        return ClusterWire(self._wire_params, self._seeds, self._nursery, scripts=self._registered.values())

    def new_wire(self, slot: int | None = None) -> WireConnection | DedicatedWire | None:
        """A connection of its own driven by trio, if the client's options allow one and the
        bus is open (its reader runs in the bus's nursery); None: use the thread path. On a
        cluster, to the node owning ``slot`` (following it when it moves)."""
        if self._wire_params is None or self._nursery is None:
            return None
        if self._seeds:
            shared = self.wire
            return shared.dedicated(slot) if isinstance(shared, ClusterWire) else None
        return self._server_wire(self._wire_params, self._nursery)

    def _server_wire(self, params: WireParams, nursery: trio.Nursery) -> WireConnection:
        wire = WireConnection(params, nursery)
        self._wires.add(wire)
        return wire

    def _leave(self, primary: tuple[str, int]) -> None:
        """The sentinels name ``primary``: drop the trio-driven connections to anything else
        (`follow_primary` drops redis-py's); each connects again when next used."""
        for wire in list(self._wires):
            wire.close(unless=primary)

    def confirming_wire(self) -> Wire | None:
        """The trio-driven connection of writes confirmed by ``WAIT`` (made on first use), None
        on the thread path. Not `wire`: a ``WAIT`` holds up the commands after it, reads and acks.
        On a cluster, a second `ClusterWire` (its own connection to each primary)."""
        if self.wire is None:
            return None
        if self._confirming is None:
            self._confirming = self._shared_wire()
        return self._confirming

    async def _start_background(self, nursery: trio.Nursery) -> None:
        """Hook: the bus's background tasks, run while it serves (an override starts its base's)."""

    async def _before_close(self) -> None:
        """Hook: settle what is owed to Redis (acks) before the connection goes."""

    async def keep_running(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` over and over. A Redis error (other than the connection ones `call`
        already rides out) is logged and retried after a pause: a background task never takes
        the hub down."""
        failures = 0
        while True:
            try:
                await step()
                failures = 0
            except REDIS_ERRORS as error:
                failures += 1
                log.error("%s failed: %r; retrying", what, error)
                await trio.sleep(self._backoff.delay(failures))
