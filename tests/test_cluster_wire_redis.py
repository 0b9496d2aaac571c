"""`ClusterWire` on a real Redis Cluster (3 primaries, a replica each, one cluster for the file):
one batch over every primary, a resharded slot (MOVED), a slot being migrated (ASK), scripts
flushed on one node, a blocking read, and last a primary killed and replaced by its replica."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import trio
from redis.exceptions import ClusterError, TryAgainError

from actionhub.bus.redis.cluster_wire import ClusterWire
from actionhub.bus.redis.slots import key_slot
from actionhub.bus.redis.wire import WireParams
from actionhub.testing import RedisCluster, RedisServer
from tests.polling import wait_until
from tests.servers import private_cluster

PARAMS = WireParams(None, 0, None, 0, None, None, "cluster-wire-test", timeout=5.0, connect_timeout=2.0)
SCRIPT = "return redis.call('XADD', KEYS[1], '*', 'f', ARGV[1])"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with private_cluster(primaries=3, replicas=1, node_timeout=1000) as cluster:
        yield cluster


@pytest.fixture
async def wire(cluster: RedisCluster) -> AsyncIterator[ClusterWire]:
    async with trio.open_nursery() as nursery:
        connection = ClusterWire(PARAMS, [("127.0.0.1", cluster.live[0].port)], nursery)
        yield connection
        connection.close()


def blocked_clients(cluster: RedisCluster, node: RedisServer) -> int:
    """How many connections ``node`` holds blocked (``INFO clients``)."""
    info = cluster.call(node, "INFO", "clients").decode()
    return int(next(line for line in info.splitlines() if line.startswith("blocked_clients:")).split(":")[1])


def key_on(cluster: RedisCluster, node: RedisServer, name: str) -> str:
    """A key named after ``name`` whose slot ``node`` serves."""
    for i in range(10000):
        key = f"{name}:{{{i}}}"
        if cluster.primary_of(key_slot(key)) is node:
            return key
    raise AssertionError(f"no key on node {node.port}")


def xlen(node: RedisServer, key: str, *, asking: bool = False) -> int:
    """XLEN of ``key`` on ``node`` (importing its slot: ``asking``)."""
    with redis.Redis(port=node.port) as client, client.pipeline(transaction=False) as pipe:
        if asking:
            pipe.execute_command("ASKING")
        pipe.xlen(key)
        return int(pipe.execute()[-1])


async def test_one_execute_writes_on_every_primary(cluster: RedisCluster, wire: ClusterWire) -> None:
    primaries = cluster.primaries()
    keys = [key_on(cluster, node, "every") for node in primaries]
    commands = [c for key in keys for c in (("XADD", key, "*", "f", "1"), ("WAIT", 1, 5000))]
    replies = await wire.execute(*commands, ("XLEN", keys[0]), ("PING",))
    assert [replies[i] for i in range(1, 6, 2)] == [1, 1, 1]  # each WAIT went to its write's node
    assert replies[-2:] == [1, b"PONG"]
    assert [xlen(node, key) for node, key in zip(primaries, keys, strict=True)] == [1, 1, 1]
    assert wire.slot_map is not None and set(wire.slot_map.primaries) == {
        ("127.0.0.1", p.port) for p in primaries
    }


async def test_a_resharded_slot_is_followed_by_moved(cluster: RedisCluster, wire: ClusterWire) -> None:
    source, target = cluster.primaries()[:2]
    key = key_on(cluster, source, "moved")
    await wire.execute(("XADD", key, "*", "f", "1"))
    await trio.to_thread.run_sync(cluster.reshard, key_slot(key), target)
    assert (await wire.execute(("XLEN", key), ("XADD", key, "*", "f", "2"), ("XLEN", key)))[::2] == [1, 2]
    assert wire.slot_map is not None and wire.slot_map.node_of(key_slot(key)) == ("127.0.0.1", target.port)
    assert xlen(target, key) == 2


async def test_a_slot_being_migrated_is_followed_by_ask(cluster: RedisCluster, wire: ClusterWire) -> None:
    source, target = cluster.primaries()[1:3]
    moved = key_on(cluster, source, "ask")
    slot = key_slot(moved)
    kept, fresh, block = (moved.replace("ask:", name) for name in ("kept:", "fresh:", "block:"))
    await wire.execute(("XADD", moved, "*", "f", "1"), ("XADD", kept, "*", "f", "1"))
    await trio.to_thread.run_sync(cluster.open_migration, slot, target, [moved])
    try:
        replies = await wire.execute(
            ("XADD", moved, "*", "f", "2"),  # ASK: on the target now
            ("XADD", kept, "*", "f", "2"),  # still on the source
            ("XADD", fresh, "*", "f", "1"),  # a new key: ASK, made on the target
            ("MULTI",),
            ("XADD", block, "*", "f", "1"),
            ("XADD", block, "*", "f", "2"),
            ("EXEC",),
            ("XLEN", moved),
        )
        assert replies[-1] == 2 and len(replies[-2]) == 2
        assert wire.slot_map is not None and wire.slot_map.node_of(slot) == ("127.0.0.1", source.port)
        assert [xlen(source, kept), xlen(target, fresh, asking=True), xlen(target, block, asking=True)] == [
            2,
            1,
            2,
        ]
        with pytest.raises(TryAgainError):  # keys on both sides of a half-moved slot, as Redis says
            await wire.execute(("DEL", moved, kept))
    finally:
        await trio.to_thread.run_sync(cluster.finish_migration, slot)
    assert await wire.execute(("XLEN", kept), ("XLEN", block)) == [2, 2]


async def test_scripts_flushed_on_one_node_are_loaded_again(cluster: RedisCluster, wire: ClusterWire) -> None:
    sha = wire.register(SCRIPT)
    primaries = cluster.primaries()
    keys = [key_on(cluster, node, "script") for node in primaries]
    commands = [("EVALSHA", sha, 1, key, "x") for key in keys]
    assert len(await wire.execute(*commands)) == 3
    cluster.call(primaries[1], "SCRIPT", "FLUSH")
    await wire.execute(*commands)
    assert [xlen(node, key) for node, key in zip(primaries, keys, strict=True)] == [2, 2, 2]


async def test_a_blocking_read_on_a_dedicated_connection(cluster: RedisCluster, wire: ClusterWire) -> None:
    node = cluster.primaries()[2]
    key = key_on(cluster, node, "blocking")
    dedicated = wire.dedicated(key_slot(key))
    got: list[object] = []
    blocked_before = blocked_clients(cluster, node)

    async def read() -> None:
        got.extend(await dedicated.execute(("XREAD", "BLOCK", 5000, "STREAMS", key, "$")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        # XREAD blocks on Redis: its "$" was taken before the write
        await wait_until(lambda: blocked_clients(cluster, node) > blocked_before, timeout=5, poll=0.01)
        await wire.execute(("XADD", key, "*", "f", "1"))
    assert got and got[0][0][0] == key.encode()  # type: ignore[index]


async def test_a_killed_primary_is_replaced_and_a_returning_one_says_moved(
    cluster: RedisCluster, wire: ClusterWire
) -> None:
    primaries = cluster.primaries()
    keys = [key_on(cluster, node, "failover") for node in primaries]
    commands = [("XADD", key, "*", "f", "1") for key in keys]
    await wire.execute(*commands, ("WAIT", 1, 5000))
    victim = primaries[0]
    (replica,) = cluster.replicas_of(victim)
    await trio.to_thread.run_sync(cluster.kill, victim)
    failures, deadline, delay = 0, time.monotonic() + 30, 0.05
    while True:  # as the bus does: retry with backoff what a lost node failed
        try:
            await wire.execute(*commands)
            break
        except (redis.ConnectionError, redis.TimeoutError, ClusterError, TryAgainError):
            failures += 1
            assert time.monotonic() < deadline, "the cluster wire did not find the promoted replica"
            await trio.sleep(delay)
            delay = min(delay * 2, 0.5)
    assert failures > 0
    assert await trio.to_thread.run_sync(cluster.wait_for_promotion, victim) is replica
    slot = key_slot(keys[0])
    assert wire.slot_map is not None and wire.slot_map.node_of(slot) == ("127.0.0.1", replica.port)
    assert xlen(replica, keys[0]) >= 2

    await trio.to_thread.run_sync(cluster.revive, victim)  # back as the replica's replica
    wire.slot_map.moved(slot, ("127.0.0.1", victim.port))  # as if we had not heard yet
    assert await wire.execute(("XLEN", keys[0])) == [xlen(replica, keys[0])]
    assert wire.slot_map.node_of(slot) == ("127.0.0.1", replica.port)
