"""``durable=N``: writes confirmed by Redis replicas (``WAIT``), against a real primary and replica.

Each durable write returns only once the replica has it, so the replica is read right after it
(no polling); MONITOR on the primary shows that the ``WAIT`` follows the write on its own
connection. The replica is paused (SIGSTOP) to see a write go unconfirmed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import trio
import trio.testing

from actionhub import ActionHub, BusError, ConfigurationError, Job
from actionhub.bus.base import Delivery
from actionhub.bus.redis import scripts
from actionhub.bus.redis.options import split_url
from actionhub.bus.redis.replication import confirmed_move
from actionhub.bus.redis.streams import RedisStreamsBus
from actionhub.bus.ticks import Tick
from actionhub.bus.url import open_bus
from actionhub.client import Client
from actionhub.client._ops import sha_of
from actionhub.message import Message
from actionhub.supervision.inbox import GroupInbox
from actionhub.testing import EscalationLog, RedisServer
from tests.polling import wait_until
from tests.servers import private_cluster, private_redis
from tests.test_clients import FLAVOURS, Flavour

README = Path(__file__).parents[1] / "README.md"

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: short timeouts: an unconfirmed publish fails within about a second
FAST = "durable_timeout=0.1&publish_timeout=0.5"

#: a primary that starts a replica's first sync at once (Redis waits 5 s for more replicas)
PRIMARY = ("--repl-diskless-sync-delay", "0")

#: an option the trio-driven connection does not reproduce keeps redis-py's thread path
PATHS = {"wire": "", "thread": "&socket_keepalive=true"}


class Pair:
    """A primary and its replica, linked."""

    def __init__(self, primary: RedisServer, replica: RedisServer) -> None:
        self.primary = primary
        self.replica = replica
        self.on_replica = redis.Redis(port=replica.port)

    def url(self, query: str) -> str:
        """The primary's URL, with a key prefix of the test's own and ``query``."""
        return f"{self.primary.url}?prefix=d{uuid.uuid4().hex[:8]}:&{query}"

    @contextmanager
    def replica_paused(self) -> Iterator[None]:
        self.replica.pause()
        try:
            yield
        finally:
            self.replica.resume()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with private_redis(appendonly=False, extra_args=PRIMARY) as primary:
        replica_of = ("--replicaof", "127.0.0.1", str(primary.port))
        with private_redis(appendonly=False, extra_args=replica_of) as replica:
            linked = Pair(primary, replica)
            trio.run(partial(wait_until, partial(is_linked, linked.on_replica), 20, 0.02))
            yield linked


def is_linked(replica: redis.Redis) -> bool:
    """Whether ``replica`` has linked to its primary (made its first sync)."""
    return bool(replica.info("replication").get("master_link_status") == "up")


def prefix_of(url: str) -> str:
    return split_url(url)[1].prefix


class Monitor:
    """MONITOR on the primary, in a thread, until `stop`: every command, with its connection."""

    def __init__(self, port: int) -> None:
        self._client = redis.Redis(port=port)
        self._started = threading.Event()
        self._stop = f"stop-{uuid.uuid4().hex}"
        self.commands: list[tuple[str, str]] = []  # (connection, command)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        assert self._started.wait(10)

    def _watch(self) -> None:
        with self._client.monitor() as monitor:
            self._started.set()
            while True:
                seen = monitor.next_command()
                if self._stop in seen["command"]:
                    return
                if seen.get("client_type") == "lua":  # run by a script: not sent by a connection
                    continue
                self.commands.append((f"{seen['client_address']}:{seen['client_port']}", seen["command"]))

    def stop(self) -> None:
        self._client.echo(self._stop)
        self._thread.join(10)

    def after(self, write: str, nth: int = -1) -> list[str]:
        """What the connection that sent the ``nth`` command starting with ``write`` sent next."""
        found = [i for i, (_, command) in enumerate(self.commands) if command.startswith(write)]
        assert found, f"no {write!r} among {[c for _, c in self.commands]}"
        connection = self.commands[found[nth]][0]
        return [command for conn, command in self.commands[found[nth] + 1 :] if conn == connection]


@contextmanager
def monitored(pair: Pair) -> Iterator[Monitor]:
    monitor = Monitor(pair.primary.port)
    try:
        yield monitor
    finally:
        monitor.stop()


def assert_confirmed(monitor: Monitor, write: str) -> None:
    """The connection that sent ``write`` sent ``WAIT 1`` right after it (a mark between them)."""
    following = [c for c in monitor.after(write) if not c.startswith("SET") or "#mark:" not in c]
    assert following and following[0].startswith("WAIT 1 "), (write, following[:3])


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("durable=-1", "durable must be a whole number"),
        ("durable=one", "bad value 'one' for durable"),
        ("durable=1&mode=pubsub", "durable needs mode=stream"),
        ("durable_timeout=0", "durable_timeout must be a finite number > 0"),
        ("durable_timeout=11", r"durable_timeout must be under the socket timeout \(block \+ 10: 11 s\)"),
        (
            "socket_timeout=0.5&durable=1&durable_timeout=2",
            r"durable_timeout must be under the socket timeout \(socket_timeout: 0.5 s\)",
        ),
        (
            "socket_timeout=0.5&durable=1",
            r"durable_timeout must be under the socket timeout",
        ),  # its 1 s default
    ],
)
def test_bad_durable_options_are_refused_clearly(query: str, says: str) -> None:
    url = f"redis://127.0.0.1:6379/0?{query}"
    for build in (open_bus, Client):
        with pytest.raises(ConfigurationError, match=says):
            build(url)


def test_durable_options_default_to_none_and_parse() -> None:
    assert (split_url("redis://h/0")[1].durable, split_url("redis://h/0")[1].durable_timeout) == (0, 1.0)
    options = split_url("redis://h/0?durable=2&durable_timeout=0.5")[1]
    assert (options.durable, options.durable_timeout) == (2, 0.5)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
async def test_a_bad_per_publish_durable_is_refused_before_anything_is_written(bad: Any) -> None:
    async with ActionHub("memory://").running() as hub:
        with pytest.raises(ConfigurationError, match="durable must be a whole number"):
            await hub.publish("t", 1, durable=bad)
        with pytest.raises(ConfigurationError, match="durable must be a whole number"):
            await hub.publish_many("t", [1], durable=bad)
    # nothing listens there: refused before connecting
    with Client("redis://127.0.0.1:1/0") as client, pytest.raises(ConfigurationError, match="whole number"):
        client.publish("t", 1, durable=bad)


async def test_memory_and_pubsub_refuse_replicas_they_do_not_have(redis_url: str) -> None:
    async with ActionHub("memory://").running() as hub:
        await hub.publish("t", 1, durable=0)
        with pytest.raises(ConfigurationError, match="memory:// lives in this process"):
            await hub.publish("t", 1, durable=1)
    async with ActionHub(f"{redis_url}&mode=pubsub").running() as hub:
        with pytest.raises(ConfigurationError, match="mode=pubsub stores nothing"):
            await hub.publish("t", 1, durable=1)
    with Client(f"{redis_url}&mode=pubsub") as client, pytest.raises(ConfigurationError, match="mode=pubsub"):
        client.publish("t", 1, durable=1)


# --------------------------------------------------------------------------- the hub's publishes


@pytest.mark.parametrize("path", PATHS)
async def test_a_durable_hub_publish_returns_once_the_replica_has_it(pair: Pair, path: str) -> None:
    url = pair.url(f"durable=1{PATHS[path]}")
    prefix = prefix_of(url)
    with monitored(pair) as monitor:
        async with ActionHub(url).running() as hub:
            assert (hub.bus.wire is None) == (path == "thread")  # type: ignore[attr-defined]
            await hub.publish("orders", {"n": 1})
            assert pair.on_replica.xlen(f"{prefix}orders") == 1
            await hub.publish("orders", {"n": 2}, key="k")  # to its partition's stream
            assert pair.on_replica.xlen(f"{prefix}orders:p{_partition('k')}") == 1
            await hub.publish("orders", {"n": 3}, delay=60)
            assert pair.on_replica.zcard(f"{prefix}delayed") == 1
            await hub.publish("orders", {"n": 4}, dedupe_key="once")
            assert pair.on_replica.xlen(f"{prefix}orders") == 2
            await hub.publish_many("orders", [{"n": n} for n in range(5, 10)])
            assert pair.on_replica.xlen(f"{prefix}orders") == 7
    assert_confirmed(monitor, f"XADD {prefix}orders *")
    assert_confirmed(monitor, f"EVALSHA {sha_of(scripts.PUBLISH_ONCE)}")
    assert_confirmed(monitor, f"EVALSHA {sha_of(scripts.PUBLISH_MANY_ONCE)}")


def _partition(key: str) -> int:
    from actionhub.bus.redis.keys import DEFAULT_PARTITIONS, partition_of

    return partition_of(key, DEFAULT_PARTITIONS)


async def test_publishes_at_once_share_their_waits_and_each_returns_confirmed(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a WAIT is under way, publishes go out on the shared connection and the next round
    (a mark and one WAIT) confirms them all: each is on the replica when it returns."""
    url = pair.url("durable=1")
    prefix = prefix_of(url)
    on_primary = redis.Redis(port=pair.primary.port)
    missing: list[str] = []

    async def publish(hub: ActionHub, n: int) -> None:
        message_id = await hub.publish("t", n)
        entries = pair.on_replica.xrange(f"{prefix}t")
        if not any(f'"id":"{message_id}"'.encode() in fields[b"message"] for _, fields in entries):
            missing.append(message_id)

    async with ActionHub(url).running() as hub:
        await hub.publish("warm-up", 0)  # the confirming connection is made
        held = Held(hub.bus, monkeypatch, fail_round=False)
        with monitored(pair) as monitor:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish, hub, 0)  # holds the confirming connection
                await held.holding.wait()
                for n in range(1, 40):
                    nursery.start_soon(publish, hub, n)
                await wait_until(lambda: on_primary.xlen(f"{prefix}t") == 39)  # all joined the round
                held.release.set()
    assert missing == []
    assert pair.on_replica.xlen(f"{prefix}t") == 40
    waits = [c for _, c in monitor.commands if c.startswith("WAIT")]
    rounds = [c for _, c in monitor.commands if c.startswith(f"SET {prefix}#mark ")]
    assert (len(waits), len(rounds)) == (2, 1)  # the held write's own WAIT, and one for 39 writes
    assert monitor.after(f"SET {prefix}#mark ")[0].startswith("WAIT 1 ")  # on the round's connection


async def test_marks_never_replace_the_streams_of_topics_named_like_them(pair: Pair) -> None:
    """Topics ``mark`` and ``mark:x`` are legal: the marks of durable publishes to ``x`` (a
    script's, and the rounds') must not write over their streams."""
    url = pair.url("durable=1")
    prefix = prefix_of(url)
    async with ActionHub(url).running() as hub:
        for topic in ("mark", "mark:x"):
            await hub.publish(topic, "kept")
        async with trio.open_nursery() as nursery:  # at once: rounds of confirmations
            for n in range(20):
                nursery.start_soon(partial(hub.publish, "x", n, dedupe_key=f"k{n}"))
        assert [m.payload for _, m in await hub.bus.history("mark:x")] == ["kept"]
        assert [m.payload for _, m in await hub.bus.history("mark")] == ["kept"]
    for topic in ("mark", "mark:x"):
        assert pair.on_replica.type(f"{prefix}{topic}") == b"stream"


async def test_per_publish_durable_overrides_the_url(pair: Pair) -> None:
    for default, override, waits in ((0, 1, True), (1, 0, False)):
        url = pair.url(f"durable={default}")
        prefix = prefix_of(url)
        with monitored(pair) as monitor:
            async with ActionHub(url).running() as hub:
                await hub.publish("t", 1, durable=override)
                await hub.publish_many("many", [1, 2], durable=override)
        after_xadd = monitor.after(f"XADD {prefix}t")
        assert any(c.startswith("WAIT") for c in after_xadd[:2]) is waits
        if waits:
            assert_confirmed(monitor, f"EVALSHA {sha_of(scripts.PUBLISH_MANY_ONCE)}")
        else:
            assert not any(c.startswith("WAIT") for _, c in monitor.commands)


@pytest.mark.parametrize("path", PATHS)
async def test_an_unconfirmed_hub_publish_fails_clearly_and_a_plain_one_succeeds(
    pair: Pair, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = pair.url(f"durable=1&{FAST}{PATHS[path]}")
    async with ActionHub(url).running() as hub:
        await hub.publish("t", "warm-up")
        with pair.replica_paused():
            with pytest.raises(BusError, match="publish may not be durable: 0 of 1 replica"):
                await hub.publish("t", "unconfirmed")
            with pytest.raises(BusError, match="publish may not be durable"):
                await hub.publish_many("t", ["unconfirmed"])
            await hub.publish("t", "plain", durable=0)
        await hub.publish("t", "confirmed again")
    said = [r.getMessage() for r in caplog.records if "replicas" in r.getMessage()]
    assert said[0].startswith("writes not confirmed by the replicas (publish)")
    assert said[-1] == "replicas confirm durable=1 writes again (publish)"
    assert len(said) == 2  # once at the start of the spell, once at its end


def test_each_number_of_replicas_asked_is_said_short_once_and_confirmed_again_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Writers of one bus asking 2 and 1 of one replica: the first are short, the others are
    confirmed all along, at once; neither ends the other's spell nor starts it again."""
    bus = open_bus("redis://127.0.0.1:1/0")  # not opened: nothing is sent
    assert isinstance(bus, RedisStreamsBus)
    for _ in range(2):
        assert bus.replication.note("publish", 1, 2) is False
        assert bus.replication.note("schedule retry", 1, 1) is True
    for _ in range(2):
        assert bus.replication.note("publish", 2, 2) is True
    said = [r.getMessage() for r in caplog.records if "replicas" in r.getMessage()]
    assert said == [
        "writes not confirmed by the replicas (publish): 1 of 2 within durable_timeout=1 s; "
        "a failover now could undo them",
        "replicas confirm durable=2 writes again (publish)",
    ]


async def test_durable_without_any_replica_fails_clearly(redis_url: str) -> None:
    async with ActionHub(f"{redis_url}&durable=1&{FAST}").running() as hub:
        with pytest.raises(BusError, match=r"0 of 1 replica\(s\) confirmed it .* attached to the primary"):
            await hub.publish("t", 1)


async def test_a_resend_after_a_failover_that_lost_the_entry_writes_it_again(pair: Pair) -> None:
    """The first attempt is written on the primary but not confirmed; the entry then vanishes
    (what a failover to a replica that never had it does): the resend writes it again."""
    url = pair.url("durable=1&durable_timeout=0.2&publish_timeout=10")
    prefix = prefix_of(url)
    on_primary = redis.Redis(port=pair.primary.port)
    async with ActionHub(url).running() as hub, trio.open_nursery() as nursery:
        with pair.replica_paused():
            nursery.start_soon(hub.publish, "t", "lost once")
            await wait_until(lambda: on_primary.xlen(f"{prefix}t") == 1, poll=0.01)  # the first attempt
            on_primary.delete(f"{prefix}t")  # the failover: the unconfirmed entry is gone
            # its WAIT times out: the resend writes the entry again (still unconfirmed)
            await wait_until(lambda: on_primary.xlen(f"{prefix}t") == 1, poll=0.01)
    assert [f[b"message"].count(b"lost once") for _, f in pair.on_replica.xrange(f"{prefix}t")] == [1]


async def test_a_primary_killed_mid_flow_loses_no_confirmed_publish() -> None:
    """Publishers on a hub's bus, the primary SIGKILLed under them: every publish that returned
    is on the replica (what a failover promotes); the others failed with `BusError`."""
    with private_redis(appendonly=False, extra_args=PRIMARY) as primary:
        replica_of = ("--replicaof", "127.0.0.1", str(primary.port))
        with private_redis(appendonly=False, extra_args=replica_of) as replica:
            on_replica = redis.Redis(port=replica.port)
            await wait_until(partial(is_linked, on_replica), poll=0.02)
            returned: list[str] = []
            failed: list[BusError] = []

            async def publish(bus: Any, task: int) -> None:
                try:
                    for n in range(100_000):
                        returned.append(await bus.publish(Message("t", {"task": task, "n": n})))
                except BusError as error:
                    failed.append(error)

            # durable_timeout leaves a busy machine's replica time to confirm: were every publish
            # to fail before the kill, there would be nothing to check
            bus = open_bus(f"{primary.url}?durable=1&durable_timeout=1&publish_timeout=2")
            with trio.fail_after(60):
                async with bus.open("killed", serving=False), trio.open_nursery() as nursery:
                    for task in range(8):
                        nursery.start_soon(publish, bus, task)
                    while len(returned) < 300 and not failed:  # noqa: ASYNC110 - the publishers' progress
                        await trio.sleep(0.01)
                    assert not failed, failed[0]  # before the kill, every publish is confirmed
                    primary.kill()
            there = {orjson.loads(f[b"message"])["id"] for _, f in on_replica.xrange("actionhub:t")}
            replica.kill()  # a replica of a dead primary takes seconds to stop gracefully
    assert len(failed) == 8 and set(returned) <= there


# --------------------------------------------------------------------------- the clients


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_durable_client_publish_returns_once_the_replica_has_it(pair: Pair, flavour: str) -> None:
    url = pair.url("durable=1")
    prefix = prefix_of(url)
    client = Flavour(flavour, url)
    try:
        with monitored(pair) as monitor:
            await client.call("publish", "t", 1)
            assert pair.on_replica.xlen(f"{prefix}t") == 1
            await client.call("publish", "t", 2, delay=60)
            assert pair.on_replica.zcard(f"{prefix}delayed") == 1
            await client.call("publish_many", "t", [3, 4])
            assert pair.on_replica.xlen(f"{prefix}t") == 3
        assert_confirmed(monitor, f"XADD {prefix}t")
        assert_confirmed(monitor, f"EVALSHA {sha_of(scripts.PUBLISH_ONCE)}")
        assert_confirmed(monitor, f"EVALSHA {sha_of(scripts.PUBLISH_MANY_ONCE)}")
        with pair.replica_paused():
            await client.call("publish", "t", "plain", durable=0)
            fast = Flavour(flavour, pair.url(f"durable=1&{FAST}"))
            try:
                with pytest.raises(BusError, match="publish may not be durable: 0 of 1 replica"):
                    await fast.call("publish", "t", "unconfirmed")
            finally:
                await fast.close()
    finally:
        await client.close()


@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
async def test_a_client_publish_confirmed_late_is_resent_and_written_once(pair: Pair, flavour: str) -> None:
    url = pair.url("durable=1&durable_timeout=0.2")
    prefix = prefix_of(url)
    on_primary = redis.Redis(port=pair.primary.port)
    client = Flavour(flavour, url)
    try:
        async with trio.open_nursery() as nursery:
            with monitored(pair) as monitor, pair.replica_paused():
                nursery.start_soon(partial(client.call, "publish", "t", "late"))
                resend = f"EVALSHA {sha_of(scripts.PUBLISH_ONCE)}"
                # the first attempt (an XADD) is not confirmed: its WAIT times out, and it is resent
                await wait_until(lambda: any(c.startswith(resend) for _, c in monitor.commands), poll=0.01)
    finally:
        await client.close()
    assert on_primary.xlen(f"{prefix}t") == pair.on_replica.xlen(f"{prefix}t") == 1


async def test_per_publish_durable_on_a_client(pair: Pair) -> None:
    url = pair.url("durable=0")
    prefix = prefix_of(url)
    with Client(url) as client, monitored(pair) as monitor:
        client.publish("t", 1, durable=1)
        client.publish("u", 1)
    assert_confirmed(monitor, f"XADD {prefix}t")
    assert not any(c.startswith("WAIT") for c in monitor.after(f"XADD {prefix}u"))


# --------------------------------------------------------------------------- moving a message on


class Caught:
    """One group's subscription on a bus of its own, and the deliveries it got."""

    def __init__(self, bus: RedisStreamsBus, inbox: GroupInbox) -> None:
        self.bus = bus
        self.inbox = inbox
        self.arrived = trio.Event()

    async def next(self) -> Delivery:
        while (delivery := self.inbox.take()) is None:
            await self.arrived.wait()
            self.arrived = trio.Event()
        return delivery


@asynccontextmanager
async def subscribed(url: str, topic: str) -> AsyncIterator[Caught]:
    bus = open_bus(url)
    assert isinstance(bus, RedisStreamsBus)
    async with bus.open("moves"):
        caught: Caught
        inbox = GroupInbox(
            "g", capacity=10, accept_wait=1, ordered=False, on_arrival=lambda: caught.arrived.set()
        )
        caught = Caught(bus, inbox)
        subscription = await bus.subscribe(topic, "g", inbox)
        yield caught
        await subscription.close()


@pytest.mark.parametrize("path", PATHS)
async def test_retries_and_dead_letters_are_confirmed_with_their_ack(pair: Pair, path: str) -> None:
    url = pair.url(f"durable=1{PATHS[path]}")
    prefix = prefix_of(url)
    stream, replica = f"{prefix}t", pair.on_replica
    with monitored(pair) as monitor:
        async with subscribed(url, "t") as caught:
            await caught.bus.publish(Message("t", "retried"))
            delivery = await caught.next()
            await delivery.subscription.retry(delivery, delay=60, error=None)
            assert replica.zcard(f"{prefix}delayed") == 1  # the retry is on the replica...
            assert replica.xpending(stream, "g")["pending"] == 0  # ...and so is its ack
            await caught.bus.publish(Message("t", "dead"))
            delivery = await caught.next()
            await delivery.subscription.dead_letter(delivery, reason="rejected: test")
            assert replica.xlen(f"{prefix}dead:t") == 1
            assert replica.xpending(stream, "g")["pending"] == 0
            assert await caught.bus.requeue_dead_letters("t") == 1
            assert (replica.xlen(f"{prefix}dead:t"), replica.xlen(stream)) == (0, 3)
    assert_confirmed(monitor, f"EVALSHA {sha_of(scripts.SCHEDULE)}")  # ZADD and XACK, then WAIT
    dead, requeue = monitor.after("MULTI", 0), monitor.after("MULTI", 1)
    assert [c.split()[0] for c in dead[:4]] == ["XADD", "XACK", "EXEC", "WAIT"]
    assert [c.split()[0] for c in requeue[:4]] == ["XADD", "XDEL", "EXEC", "WAIT"]


async def test_an_unconfirmed_move_is_said_once_and_not_undone(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    url = pair.url(f"durable=1&{FAST}")
    prefix = prefix_of(url)
    on_primary = redis.Redis(port=pair.primary.port)
    async with subscribed(url, "t") as caught:
        await caught.bus.publish(Message("t", "retried"))
        delivery = await caught.next()
        with pair.replica_paused():
            await delivery.subscription.retry(delivery, delay=60, error=None)
        assert on_primary.zcard(f"{prefix}delayed") == 1  # moved on the primary, once, not retried
        await caught.bus.publish(Message("t", "dead"))
        delivery = await caught.next()
        await delivery.subscription.dead_letter(delivery, reason="rejected: test")
        with pair.replica_paused(), pytest.raises(BusError, match="requeue dead letters may not be durable"):
            await caught.bus.requeue_dead_letters("t")  # an operator's command: told, not logged
        assert on_primary.xlen(f"{prefix}dead:t") == 0  # requeued on the primary all the same
    said = [r.getMessage() for r in caplog.records if "replicas" in r.getMessage()]
    assert said[0].startswith("writes not confirmed by the replicas (schedule retry): 0 of 1")
    assert said[1] == "replicas confirm durable=1 writes again (publish)"


class Held:
    """The confirming connection's first call (a writer's write and ``WAIT``) holds until
    `release`, so later writes join a round; the second (that round's mark and ``WAIT``) fails,
    as a lost reply would, if ``fail_round``."""

    def __init__(self, bus: Any, monkeypatch: pytest.MonkeyPatch, *, fail_round: bool = True) -> None:
        wire = bus.confirming_wire()
        self.real = wire.execute
        self.fail_round = fail_round
        self.calls: list[tuple[Any, ...]] = []
        self.holding = trio.Event()  # the first call is held
        self.release = trio.Event()
        monkeypatch.setattr(wire, "execute", self.execute)

    async def execute(self, *commands: Any, timeout: float | None = None) -> list[Any]:
        self.calls.append(commands)
        if len(self.calls) == 1:
            self.holding.set()
            await self.release.wait()
        elif len(self.calls) == 2 and self.fail_round:
            raise redis.ConnectionError("the round's reply was lost")
        return await self.real(*commands, timeout=timeout)


async def test_durable_publishes_at_once_in_the_cluster_layout_on_one_server_share_a_round(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``layout=cluster`` on one server (its keys tagged, its connection not a cluster's): writes
    made while a WAIT is under way join a round whose mark is in a written stream's slot, and
    each returns confirmed (the round's mark once failed to name a key: a raw ValueError)."""
    url = pair.url("layout=cluster&durable=1")
    prefix = prefix_of(url)
    topics = [f"t{n % 4}" for n in range(20)]  # several slots
    missing: list[str] = []

    async def publish(hub: ActionHub, topic: str, n: int) -> None:
        message_id = await hub.publish(topic, n)
        streams = [
            key for key in pair.on_replica.scan_iter(f"{prefix}*") if pair.on_replica.type(key) == b"stream"
        ]
        if not any(
            f'"id":"{message_id}"'.encode() in fields[b"message"]
            for stream in streams
            for _, fields in pair.on_replica.xrange(stream)
        ):
            missing.append(message_id)

    async with ActionHub(url).running() as hub:
        await hub.publish("warm-up", 0)  # the confirming connection is made
        held = Held(hub.bus, monkeypatch, fail_round=False)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish, hub, "t0", -1)  # holds the confirming connection
                await held.holding.wait()
                for n, topic in enumerate(topics):
                    nursery.start_soon(publish, hub, topic, n)
                await wait_until(lambda: len(held.calls) == 1 and _joined(pair, prefix) == len(topics))
                held.release.set()
    assert missing == []
    rounds = [call for call in held.calls[1:] if call[-1][0] == "WAIT"]
    assert rounds and all("#mark" in str(call[0][1]) for call in rounds)


def _joined(pair: Pair, prefix: str) -> int:
    """The entries on the primary of streams under ``prefix`` but the warm-up's (the held one is
    not sent yet)."""
    on_primary = redis.Redis(port=pair.primary.port)
    streams = [key for key in on_primary.scan_iter(f"{prefix}*") if on_primary.type(key) == b"stream"]
    return sum(on_primary.xlen(stream) for stream in streams) - 1


@pytest.mark.parametrize(
    "then", ["nothing", "the confirming connection reconnects", "the write went elsewhere"]
)
async def test_a_round_confirms_only_writes_to_the_server_it_waits_on(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    """A round's WAIT counts its own server's writes: if the confirming connection was made again
    after a joined write went out (under Sentinel, perhaps to a new primary), or the write went
    to another address, the round confirms it by no replica (a publish then resends)."""
    url = pair.url("durable=1")
    prefix = prefix_of(url)
    async with ActionHub(url).running() as hub:
        bus = hub.bus
        assert isinstance(bus, RedisStreamsBus) and bus.wire is not None
        await hub.publish("warm-up", 0)  # both connections are made
        await bus.wire.execute(("PING",))
        confirming = bus.confirming_wire()
        assert confirming is not None
        held = Held(bus, monkeypatch, fail_round=False)
        counts: list[int] = []

        async def join() -> None:
            _, count = await bus.replication.write([("XADD", f"{prefix}t", "*", "m", "1")], 1, None)
            counts.append(count)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.publish, "first", 1)  # holds the confirming connection
            await held.holding.wait()  # (not all tasks blocked: it may be reading from Redis)
            if then == "the write went elsewhere":
                monkeypatch.setattr(bus.wire, "address", ("127.0.0.2", pair.primary.port))
            nursery.start_soon(join)
            await trio.testing.wait_all_tasks_blocked()  # written, waiting for the round
            if then == "the confirming connection reconnects":
                generation = confirming.generation
                confirming.close()  # the held call and the round connect again
            held.release.set()
        assert counts == [1 if then == "nothing" else 0]
        if then == "the confirming connection reconnects":
            assert confirming.generation == generation + 1


async def test_a_failed_round_leaves_its_writes_unconfirmed_not_written_twice(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes that joined a round got their own replies: when the round fails, a move is not
    made again (one dead letter, said to be short) and a publish is resent (written once)."""
    url = pair.url("durable=1")
    prefix = prefix_of(url)
    async with ActionHub(url).running() as hub:
        bus = hub.bus
        assert isinstance(bus, RedisStreamsBus)
        await hub.publish("warm-up", 0)  # the confirming connection is made
        fails = Held(bus, monkeypatch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.publish, "first", 1)  # holds the confirming connection
            await fails.holding.wait()
            move = [("MULTI",), ("XADD", f"{prefix}dead:t", "*", "message", "m"), ("EXEC",)]
            nursery.start_soon(partial(confirmed_move, bus, move, what="dead-letter"))
            nursery.start_soon(hub.publish, "joined", 2)
            await trio.testing.wait_all_tasks_blocked()  # both wrote, and wait for the round
            assert len(fails.calls) == 1
            fails.release.set()
        assert len(fails.calls) >= 3  # the round failed; the publish was resent and confirmed
    assert pair.on_replica.xlen(f"{prefix}dead:t") == 1
    assert pair.on_replica.xlen(f"{prefix}joined") == 1
    said = [r.getMessage() for r in caplog.records if "replicas" in r.getMessage()]
    assert len(said) == 2, said  # the move and the publish ask as many replicas: one spell
    # both learn at once that the round failed: which says so first is the scheduler's choice
    assert re.match(r"writes not confirmed by the replicas \((dead-letter|publish)\): 0 of 1 ", said[0])
    assert said[1] == "replicas confirm durable=1 writes again (publish)"  # the publish's resend


async def test_durable_schedule_ticks_are_confirmed(pair: Pair) -> None:
    url = pair.url("durable=1")
    prefix = prefix_of(url)
    bus = open_bus(url)
    async with bus.open("ticks", serving=False):
        now = int(time.time() * 1000) - 1000  # a tick due a second ago, on any clock here
        message = Message("ticked", {"at": now})
        fired = await bus.fire_ticks("every-second", "digest", "latest", [Tick(now, message)])
        assert fired.published == (now,)
        assert pair.on_replica.xlen(f"{prefix}ticked") == 1


async def test_the_readmes_least_privilege_user_writes_durably(pair: Pair) -> None:
    url = pair.url("durable=1")
    prefix = prefix_of(url)
    found = re.search(r"^ACL SETUSER actionhub (.+)$", README.read_text(), re.MULTILINE)
    assert found, "the README shows no ACL SETUSER line"
    user = f"durable-{prefix.rstrip(':')}"
    admin = redis.Redis(port=pair.primary.port)
    admin.execute_command("ACL", "SETUSER", user, *found.group(1).replace("actionhub:", prefix).split())
    as_user = url.replace("redis://", f"redis://{user}:s3cret@").replace("<password>", "s3cret")
    admin.execute_command("ACL", "SETUSER", user, ">s3cret")
    try:
        async with ActionHub(as_user).running() as hub, trio.open_nursery() as nursery:
            for n in range(5):  # at once: some in a round of their own
                nursery.start_soon(partial(hub.publish, "t", n, dedupe_key=f"k{n}"))
        async with subscribed(as_user, "t") as caught:
            delivery = await caught.next()
            await delivery.subscription.retry(delivery, delay=60, error=None)
            delivery = await caught.next()
            await delivery.subscription.dead_letter(delivery, reason="rejected: test")
            assert await caught.bus.requeue_dead_letters("t") == 1
        with Client(as_user) as client:
            client.publish("t", "from a client")
        assert [entry for entry in admin.acl_log() if entry.get("username") == user] == []
    finally:
        admin.execute_command("ACL", "DELUSER", user)


# --------------------------------------------------------------------------- the CLI


def test_cli_publish_durable(pair: Pair) -> None:
    url = pair.url(FAST)
    prefix = prefix_of(url)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}  # this tree's actionhub

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        main = "from actionhub.cli import main; raise SystemExit(main())"
        command = [sys.executable, "-c", main, "publish", "--bus", url, *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    done = cli("t", "1", "--durable", "1")
    assert done.returncode == 0, done.stderr
    assert pair.on_replica.xlen(f"{prefix}t") == 1
    with pair.replica_paused():
        unconfirmed = cli("t", "2", "--durable", "1")
    assert unconfirmed.returncode == 3  # the bus's fault, as when Redis is unreachable
    assert "publish may not be durable" in unconfirmed.stderr and "Traceback" not in unconfirmed.stderr
    bad = cli("t", "1", "--durable", "-1")
    assert bad.returncode != 0 and "--durable: must be >= 0" in bad.stderr


async def test_a_primary_short_of_its_min_replicas_holds_writes_back_until_one_is_attached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``min-replicas-to-write``: a primary with fewer replicas refuses every write (``NOREPLICAS``),
    XREADGROUP and XACK included. Hubs wait for it as for an outage, said once as it starts and once
    as it ends, and go on once a replica is attached; a client's publish fails with one clear line."""
    with private_redis(
        appendonly=False, extra_args=("--min-replicas-to-write", "1", "--repl-diskless-sync-delay", "0")
    ) as primary:
        with pytest.raises(BusError, match="NOREPLICAS"), Client(primary.url) as client:
            client.publish("held", 0)
        escalations = EscalationLog()
        hub = ActionHub(primary.url, on_escalation=escalations)
        ran = trio.Event()

        @hub.action("held")
        async def held(job: Job) -> None:
            ran.set()

        async def run_hub() -> None:
            async with hub.running():
                await hub.publish("held", 1)
                await ran.wait()

        replica = RedisServer(appendonly=False, extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_hub)
                await wait_until(lambda: "redis refuses writes" in caplog.text)
                await trio.to_thread.run_sync(replica.start)
        finally:
            replica.close()
    said = [r.getMessage() for r in caplog.records if r.name == "actionhub.redis"]
    assert sum("redis refuses writes" in line for line in said) == 1, said
    assert sum("redis takes writes again" in line for line in said) == 1, said
    assert not escalations


async def test_durable_publishes_on_a_cluster_are_confirmed_by_the_slots_replica() -> None:
    """``durable=1`` on a Redis Cluster (the thread path): each write goes with its ``WAIT`` to
    the primary of its slot, on one of that node's connections; a replica of each confirms it.
    Plain, keyed (another slot), deduplicated (the mark in the target's slot), batched, a
    scheduled tick, and a keyed requeue (XADD to the partition confirmed, then XDEL)."""

    with private_cluster(primaries=3, replicas=1) as cluster:
        url = f"{cluster.url}?prefix=durable-cluster:&durable=1&durable_timeout=5"
        calls: list[object] = []
        hub = ActionHub(url)

        @hub.action("orders", max_attempts=1)
        async def orders(job: Job) -> None:
            calls.append(job.payload)
            if job.payload == "fail":
                raise RuntimeError("dead letter, then requeued")

        with trio.fail_after(60):
            async with hub.running():
                await hub.publish("orders", 1)
                await hub.publish("orders", 2, key="customer-2")
                first = await hub.publish("orders", 3, dedupe_key="d")
                assert await hub.publish("orders", 3, dedupe_key="d") == first
                await hub.publish_many("orders", [4, 5])
                await hub.publish("orders", "fail", key="customer-9")
                await wait_until(lambda: len(calls) == 6, timeout=30)
                assert await hub.requeue_dead_letters("orders") == 1
                await wait_until(lambda: len(calls) == 7, timeout=30)
        assert sorted(map(str, calls)) == sorted(map(str, [1, 2, 3, 4, 5, "fail", "fail"]))
