"""What both Redis transports share: options from the URL, calls from trio, the atomic scripts,
delayed messages, dead letters and request/reply.

redis-py's client is synchronous; its calls run in a worker thread (``trio.to_thread``), one
hop per batch, never one per message on the consuming path. The hot path (publish, read, ack)
runs on `WireConnection`s instead, driven by trio itself, where the client's options allow.
A dropped connection or a Redis restart is retried with backoff and logged once per outage;
nothing in flight is acked meanwhile.
"""

from __future__ import annotations

import abc
import logging
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, TypeVar, cast

import redis
import trio
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoScriptError,
    ResponseError,
)

from ...errors import BusError, ConfigurationError, MalformedMessage
from ...message import Message, decode
from ...supervision.policy import Backoff
from ..base import Bus, ControlRequest, DeadLetter, ReplyChannel, TopicInfo
from ..ticks import ScheduleState, Tick, TicksFired
from ..url import redact
from . import control, schedules, scripts
from .durable import Confirm, NotReplicated, publish_confirm
from .entries import (
    PUBLISH_BATCH,
    Requeued,
    dead_letter_of,
    delayed_member,
    encode_entry,
    requeued,
)
from .keys import Keys
from .once import KeptTopics, look_back
from .options import TRANSIENT, RedisOptions, connect, consumer_name, describe, pipelined, text
from .replication import Replication, durably, requeue_confirmed
from .results import RedisStatuses
from .sentinel import close_client, follow_primary
from .topics import topic_info_call, topic_info_of
from .wire import Command, WireConnection, wire_params

log = logging.getLogger("actionhub.redis")

#: redis-py calls a bus runs in threads at once (each holds a pooled connection meanwhile).
CALLS_AT_ONCE = 4

T = TypeVar("T")


class RedisBusBase(Bus):
    """Connection, thread hops and the shared Redis features of both transports."""

    durable = False
    #: whether the acker sends the queued status writes before its acks (`RedisStatuses.flush`)
    statuses_before_acks = False

    def __init__(self, url: str, redis_url: str, options: RedisOptions, *, client: Any = None) -> None:
        self.url = url
        self.options = options
        self.prefix = options.prefix
        self.keys = Keys(options.prefix)
        # redis-py's stubs type replies loosely; `client` lets tests pass a fakeredis client
        self.client: Any = client if client is not None else connect(redis_url, options)
        self._schedule = self.client.register_script(scripts.SCHEDULE)
        self._move_due_script = self.client.register_script(scripts.MOVE_DUE)
        self._topic_info = self.client.register_script(scripts.TOPIC_INFO)
        self._publish_once = self.client.register_script(scripts.PUBLISH_ONCE)  # both transports' publish
        self.kept_topics = KeptTopics()  # which topics keep results: their publishes run the script
        self._backoff = Backoff(0.05, 5.0, 0.2)
        # each call in a thread holds one of the client's pooled connections: a few at once
        # whatever the number of groups; calls that block in Redis have threads of their own
        self._threads = trio.CapacityLimiter(CALLS_AT_ONCE)
        self._blocking_threads = trio.CapacityLimiter(512)
        self._outage = False
        self._outage_began = -math.inf  # trio time at which the current (or last) outage began
        self.reachable_since = -math.inf  # trio time at which the last outage ended
        self._nursery: trio.Nursery | None = None
        self._wire_params = wire_params(self.client)
        self.wire: WireConnection | None = None  # shared, pipelined, while open (if possible)
        self._wires: weakref.WeakSet[WireConnection] = weakref.WeakSet()  # every one made
        self._confirming: WireConnection | None = None  # writes with their WAIT (replication.py)
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
            sources = {script.sha: script.script for script, _, _ in calls}
            load: list[Command] = [("SCRIPT", "LOAD", source) for source in sources.values()]
            await self.execute(load, what=what, deadline=deadline)
            return await self.execute(commands, what=what, deadline=deadline)

    def confirm(self, topic: str, replicas: int | None = None) -> Confirm | None:
        """How a publish to ``topic`` is confirmed: by ``replicas`` (None: the URL's ``durable``)
        replicas; None if by none."""
        return publish_confirm(self.keys, topic, self.options.durable if replicas is None else replicas)

    async def run_script_once(
        self,
        script: Any,
        build: Callable[[int], tuple[list[str], list[Any]]],
        back: int,
        *,
        confirm: Confirm | None = None,
        what: str = "publish",
    ) -> list[Any]:
        """One attempt of a publish script: ``build(back)`` gives its keys and arguments (``back``:
        0 for a first attempt, else a resend's `look_back`); its reply, in a list. ``confirm``:
        `NotReplicated` unless enough replicas confirm it."""
        keys, args = build(back)
        if confirm is not None:
            command: Command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            return await durably(self, [command], confirm, what=what, scripts=[script])
        wire = self.wire
        if wire is None:
            run = partial(script, keys=keys, args=args)  # redis-py's Script loads it if need be
            return [await trio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=self._threads)]
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await wire.execute(command)
        except NoScriptError:  # Redis restarted, or SCRIPT FLUSH
            await wire.execute(("SCRIPT", "LOAD", script.script))
            return await wire.execute(command)

    async def resend(
        self,
        script: Any,
        build: Callable[[int], tuple[list[str], list[Any]]],
        elapsed: float,
        *,
        confirm: Confirm | None = None,
        what: str = "publish",
    ) -> list[Any]:
        """The resend of a publish first sent ``elapsed`` seconds ago (see once.py)."""
        return await self.run_script_once(script, build, look_back(elapsed), confirm=confirm, what=what)

    async def send_once(
        self,
        script: Any,
        build: Callable[[int], tuple[list[str], list[Any]]],
        *,
        what: str,
        confirm: Confirm | None = None,
    ) -> Any:
        """A publish script, retried for ``publish_timeout`` as a resend that writes nothing
        its first attempt wrote; its reply. ``confirm``: it returns once enough replicas
        confirm it; one not confirmed in time is resent like one whose reply was lost."""
        (reply,) = await self.call_async(
            partial(self.run_script_once, script, build, 0, confirm=confirm, what=what),
            what=what,
            deadline=trio.current_time() + self.options.publish_timeout,
            again=partial(self.resend, script, build, confirm=confirm, what=what),
        )
        return reply

    async def keeps_results(self, topic: str) -> bool:
        """Whether ``topic`` keeps results, as `kept_topics` knows it, read again when stale."""
        kept = self.kept_topics.kept(topic)
        if kept is None:
            key = self.keys.keeps_results(topic)
            ((raw,),) = await self.execute(
                [("MGET", key)],
                what="publish",  # read as part of one, for as long as one retries
                deadline=trio.current_time() + self.options.publish_timeout,
            )
            kept = self.kept_topics.learn(topic, raw is not None)
        return kept

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
            except TRANSIENT as error:
                failures += 1
                if not self._outage:
                    self._outage = True
                    self._outage_began = trio.current_time()
                    log.warning(
                        "redis unreachable (%s): %s; retrying with backoff",
                        what,
                        describe(error),
                        extra={"bus": redact(self.url), "operation": what},
                    )
                if deadline is not None and trio.current_time() >= deadline:
                    raise BusError(f"redis unreachable for {what}: {describe(error)}") from error
                await trio.sleep(self._backoff.delay(failures))
                continue
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
            # a call sent before the outage began may still succeed (its reply was on its way):
            # only one sent since says that Redis is back
            if self._outage and attempt >= self._outage_began:
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
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.wire = self.new_wire()
                nursery.start_soon(follow_primary, self.client, self._leave, redact(self.url))
                if serving:
                    nursery.start_soon(self.keep_running, "moving delayed messages", self._move_due)
                    await self._start_background(nursery)
                try:
                    yield
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):
                        await self._before_close()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.wire = self._confirming = None
            close_client(self.client)

    def new_wire(self) -> WireConnection | None:
        """A connection of its own driven by trio, if the client's options allow one and the
        bus is open (its reader runs in the bus's nursery); None: use the thread path."""
        if self._wire_params is None or self._nursery is None:
            return None
        wire = WireConnection(self._wire_params, self._nursery)
        self._wires.add(wire)
        return wire

    def _leave(self, primary: tuple[str, int]) -> None:
        """The sentinels name ``primary``: drop the trio-driven connections to anything else
        (`follow_primary` drops redis-py's); each connects again when next used."""
        for wire in list(self._wires):
            wire.close(unless=primary)

    def confirming_wire(self) -> WireConnection | None:
        """The trio-driven connection of writes confirmed by ``WAIT`` (made on first use), None
        on the thread path. Not `wire`: a ``WAIT`` holds up the commands after it, reads and acks."""
        if self.wire is None:
            return None
        if self._confirming is None:
            self._confirming = self.new_wire()
        return self._confirming

    async def _start_background(self, nursery: trio.Nursery) -> None:
        """Hook: the transport's own background tasks."""

    async def _before_close(self) -> None:
        """Hook: settle what is owed to Redis (acks) before the connection goes."""

    def encode(self, message: Message) -> bytes:
        """The wire-format entry of ``message``, within the size limit."""
        return encode_entry(message, self.options.max_message_bytes)

    def check_message(self, message: Message) -> None:
        try:
            self.encode(message)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(str(error)) from None

    def decode_message(self, topic: str, raw: bytes, default_id: str = "") -> Message:
        """Decode an entry from the wire; `MalformedMessage` if it is not a valid envelope within
        the size limit, or if its ``reply_to`` is not a reply key of this prefix (a reply is an
        LPUSH and an EXPIRE: sent anywhere else it could clobber another application's keys)."""
        message = decode(topic, raw, max_bytes=self.options.max_message_bytes, default_id=default_id)
        reply_prefix = self.keys.reply_prefix
        if message.reply_to is not None and not message.reply_to.startswith(reply_prefix):
            raise MalformedMessage(f"'reply_to' must be a key under {reply_prefix}")
        return message

    # ------------------------------------------------------------------ checkpoints

    async def load_progress(self, key: str) -> bytes | None:
        # MGET, not GET: the least-privilege ACL of the README already grants it
        (state,) = await self.call(lambda: self.client.mget([key]), what="load a checkpoint")
        return cast(bytes | None, state)

    async def save_progress(self, key: str, state: bytes) -> None:
        ttl = max(1, math.ceil(self.options.progress_ttl))
        await self.call(lambda: self.client.set(key, state, ex=ttl), what="save a checkpoint")

    async def clear_progress(self, key: str) -> None:
        await self.call(lambda: self.client.delete(key), what="clear a checkpoint")

    # ------------------------------------------------------------------ delayed messages

    async def schedule(self, kind: str, target: str, group: str, entry: bytes, delay: float) -> None:
        """Deliver ``entry`` after ``delay`` seconds (atomically: it is never lost nor doubled)."""
        member = delayed_member(kind, target, group, entry)
        await self.call(
            lambda: self._schedule(keys=[self.keys.delayed], args=[delay, member]),
            what="schedule",
            deadline=trio.current_time() + self.options.publish_timeout,
        )

    async def _move_due(self) -> None:
        """Move due delayed messages to their stream/channel; every hub runs this, the script's
        atomicity makes that safe."""
        ((moved, wait),) = await self.run_scripts(
            [(self._move_due_script, [self.keys.delayed], [500])], what="move delayed"
        )
        if int(moved) < 500:
            seconds = float(wait)
            await trio.sleep(0.25 if seconds < 0 else min(max(seconds, 0.005), 0.25))

    async def keep_running(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` over and over. A Redis error (other than the connection ones `call`
        already rides out) is logged and retried after a pause: a background task never takes
        the hub down."""
        failures = 0
        while True:
            try:
                await step()
                failures = 0
            except redis.RedisError as error:
                failures += 1
                log.error("%s failed: %r; retrying", what, error)
                await trio.sleep(self._backoff.delay(failures))

    # ------------------------------------------------------------------ dead letters

    async def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        entries = await self.call(
            lambda: self.client.xrange(self.keys.dead(topic), count=limit), what="read dead letters"
        )
        return [dead_letter_of(topic, entry_id, fields) for entry_id, fields in entries]

    async def _take_dead(self, topic: str, ids: list[str] | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        key = self.keys.dead(topic)
        if ids is None:
            return await self.call(lambda: self.client.xrange(key), what="read dead letters")
        if not ids:
            return []

        def read() -> list[tuple[bytes, dict[bytes, bytes]]]:
            with self.client.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.xrange(key, entry_id, entry_id)
                return [entry for found in pipe.execute() for entry in found]

        return await self.call(read, what="read dead letters")

    async def requeue_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        taken = await self._take_dead(topic, ids)
        for start in range(0, len(taken), PUBLISH_BATCH):
            # a chunk is all back, or none: one transaction
            chunk = [c for entry_id, fields in taken[start : start + PUBLISH_BATCH]
                     for c in self._requeue(topic, requeued(topic, fields), entry_id)]  # fmt: skip
            if self.options.durable:
                await requeue_confirmed(self, chunk)
                continue

            def requeue(chunk: list[Command] = chunk) -> None:
                with self.client.pipeline(transaction=True) as pipe:
                    for command in chunk:
                        pipe.execute_command(*command)
                    pipe.execute()

            await self.call(requeue, what="requeue dead letters")
        return len(taken)

    @abc.abstractmethod
    def _requeue(self, topic: str, again: Requeued, entry_id: bytes) -> list[Command]:
        """The commands putting one dead letter back and removing it from the dead letters."""

    async def purge_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        key = self.keys.dead(topic)
        if ids is None:
            count = await self.call(lambda: self.client.xlen(key), what="purge dead letters")
            await self.call(lambda: self.client.delete(key), what="purge dead letters")
            return int(count)
        if not ids:
            return 0
        return int(await self.call(lambda: self.client.xdel(key, *ids), what="purge dead letters"))

    # ------------------------------------------------------------------ request / reply

    @asynccontextmanager
    async def reply_channel(self) -> AsyncIterator[ReplyChannel]:
        channel = control.RedisReplyChannel(self, self.keys.new_reply())
        try:
            yield channel
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.call(lambda: self.client.delete(channel.address), what="drop reply key")

    async def send_reply(self, address: str, message: Message) -> None:
        raw = message.encode()
        deadline = trio.current_time() + self.options.publish_timeout
        wire = self.wire
        if wire is not None:  # one write on the trio-driven connection: no thread hop
            commands = (("MULTI",), ("LPUSH", address, raw), ("EXPIRE", address, 60), ("EXEC",))
            await self.call_async(partial(wire.execute, *commands), what="send reply", deadline=deadline)
            return

        def push() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.lpush(address, raw)
                pipe.expire(address, 60)  # a requester that gave up leaves nothing behind
                pipe.execute()

        await self.call(push, what="send reply", deadline=deadline)

    # ------------------------------------------------------------------ operating many hubs

    async def announce(self, hub: str, snapshot: bytes, ttl: float) -> None:
        key = self.keys.hub(hub)
        try:
            await self.call(lambda: self.client.set(key, snapshot, px=int(ttl * 1000)), what="announce")
        except redis.RedisError as error:  # refused (out of memory, say): the hub goes on, says so
            raise BusError(f"redis refused announce: {error}") from error

    async def withdraw(self, hub: str) -> None:
        try:
            await self.call(lambda: self.client.delete(self.keys.hub(hub)), what="withdraw")
        except redis.RedisError as error:  # the announcement expires anyway: say so, stop cleanly
            raise BusError(f"could not withdraw hub {hub}: {error!r}") from error

    async def announcements(self) -> list[bytes]:
        def read() -> list[bytes]:
            keys = list(self.client.scan_iter(match=self.keys.hubs, count=1000))
            return [doc for doc in self.client.mget(keys) if doc is not None] if keys else []

        return await self.call(read, what="read announcements")

    def control_requests(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[ControlRequest]]:
        """Commands arrive on the pub/sub channel ``<prefix>control`` (see control.py)."""
        return control.control_requests(self)

    async def send_control(self, command: bytes, *, timeout: float, expect: int) -> list[bytes]:
        return await control.send_control(self, command, timeout=timeout, expect=expect)

    async def fire_ticks(
        self, schedule: str, digest: str, catch_up: str, ticks: Sequence[Tick]
    ) -> TicksFired:
        return await schedules.fire_ticks(self, schedule, digest, catch_up, ticks)

    async def schedule_states(self, names: Sequence[str] | None = None) -> dict[str, ScheduleState]:
        return await schedules.schedule_states(self, names)

    async def record(self, stream: str, fields: dict[str, str]) -> None:
        key = self.keys.events(stream)
        await self.call(
            lambda: self.client.xadd(key, fields, maxlen=self.options.max_dead_letters),
            what=f"record {stream}",
        )

    async def events(self, stream: str, *, limit: int = 100, newest: bool = False) -> list[dict[str, str]]:
        key = self.keys.events(stream)
        command: Command = ("XREVRANGE", key, "+", "-") if newest else ("XRANGE", key, "-", "+")
        (entries,) = await self.execute([(*command, "COUNT", limit)], what="read events")
        return [_fields(fields) for _, fields in entries]

    # ------------------------------------------------------------------ topics

    async def topic_partitions(self, topic: str) -> int:
        """How many partition streams ``topic`` has (0: none, or a bus without them)."""
        return 0

    async def topic_info(self, topic: str) -> TopicInfo:
        partitions = await self.topic_partitions(topic)
        keys, args = topic_info_call(self.keys, topic, partitions, pubsub=self.options.mode == "pubsub")
        (reply,) = await self.run_scripts([(self._topic_info, keys, args)], what=f"read the state of {topic}")
        return topic_info_of(topic, partitions, reply)

    # ------------------------------------------------------------------ results

    def statuses(self) -> RedisStatuses:
        store: RedisStatuses | None = self.__dict__.get("_statuses")
        if store is None:  # made on first use: a bus whose groups keep no results holds none
            store = self._statuses = RedisStatuses(self)
        return store


class RedisProgress:
    """Checkpoints of a Redis subscription's messages (both transports keep them alike)."""

    bus: RedisBusBase
    topic: str
    group: str

    async def load_progress(self, message_id: str) -> bytes | None:
        return await self.bus.load_progress(self.bus.keys.progress(self.topic, self.group, message_id))

    async def save_progress(self, message_id: str, state: bytes) -> None:
        await self.bus.save_progress(self.bus.keys.progress(self.topic, self.group, message_id), state)

    async def clear_progress(self, message_id: str) -> None:
        await self.bus.clear_progress(self.bus.keys.progress(self.topic, self.group, message_id))


def _fields(fields: Sequence[bytes] | dict[bytes, bytes]) -> dict[str, str]:
    """A stream entry's fields: raw from the wire (name, value, name, value, ...) or redis-py's."""
    pairs = fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2], strict=True)
    return {text(name): text(value) for name, value in pairs}


def is_nogroup(error: ResponseError) -> bool:
    return str(error).startswith("NOGROUP")
