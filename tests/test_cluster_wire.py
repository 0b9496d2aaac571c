"""`ClusterWire` against fake cluster nodes (tests/fake_cluster.py): routing, redirections,
scripts and a node lost. The real cluster's turn is in test_cluster_wire_redis.py."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
import redis
import trio
from redis.exceptions import NoScriptError, TryAgainError

from actionhub.bus.redis.cluster_wire import ClusterWire
from actionhub.bus.redis.slots import key_slot
from actionhub.bus.redis.wire import WireParams
from tests.fake_cluster import FakeCluster, fake_cluster, key_on
from tests.polling import wait_until

PARAMS = WireParams(None, 0, None, 0, None, None, None, timeout=5.0, connect_timeout=2.0)


@pytest.fixture
async def world() -> AsyncIterator[FakeCluster]:
    async with fake_cluster() as world:
        yield world


@pytest.fixture
async def wire(world: FakeCluster) -> AsyncIterator[ClusterWire]:
    async with trio.open_nursery() as nursery:
        cluster = ClusterWire(PARAMS, [world.a.address], nursery)
        yield cluster
        cluster.close()


async def test_a_mixed_batch_goes_to_each_slot_s_node_and_replies_come_in_order(
    world: FakeCluster, wire: ClusterWire
) -> None:
    a1, a2, b1 = key_on(world.a, "a"), key_on(world.a, "x"), key_on(world.b, "b")
    replies = await wire.execute(
        ("RPUSH", a1, "1"),
        ("WAIT", 0, 0),  # follows the write before it
        ("RPUSH", b1, "2"),
        ("ECHO", "e"),
        ("WAIT", 0, 0),
        ("RPUSH", a2, "3"),
        ("RPUSH", a1, "4"),
        ("MULTI",),
        ("RPUSH", b1, "5"),
        ("RPUSH", b1, "6"),
        ("EXEC",),
        ("WAIT", 0, 0),
    )
    assert replies == [
        1,
        world.a.port,
        1,
        b"e",
        world.b.port,
        1,
        2,
        b"OK",
        b"QUEUED",
        b"QUEUED",
        [2, 3],
        world.b.port,
    ]
    assert world.a.store == {a1.encode(): [b"1", b"4"], a2.encode(): [b"3"]}
    assert world.b.store == {b1.encode(): [b"2", b"5", b"6"]}
    assert await wire.execute(("PING",)) == [b"PONG"]  # keyless alone: any node
    assert wire.connection_of(key_slot(a1)) == (1, world.a.address)
    assert wire.connection_of(key_slot(b1)) == (1, world.b.address)


async def test_moved_updates_the_map_and_resends_to_the_new_owner(
    world: FakeCluster, wire: ClusterWire
) -> None:
    key, other = key_on(world.a, "m"), key_on(world.a, "n")
    await wire.execute(("RPUSH", other, "0"))
    slot = key_slot(key)
    world.owners[slot] = world.b  # resharded behind the wire's back
    shards_asked = world.a.names().count(b"CLUSTER")
    assert await wire.execute(("RPUSH", other, "1"), ("RPUSH", key, "x"), ("WAIT", 0, 0)) == [
        2,
        1,
        0,  # redirected: the WAIT confirms nothing (the batch's writes ran on a and b)
    ]
    assert world.b.store == {key.encode(): [b"x"]} and key.encode() not in world.a.store
    assert wire.slot_map is not None and wire.slot_map.node_of(slot) == world.b.address
    await wait_until(lambda: world.a.names().count(b"CLUSTER") > shards_asked)  # a refresh followed
    assert await wire.execute(("LRANGE", key, 0, -1)) == [[b"x"]]
    assert world.a.names().count(b"LRANGE") == 0  # went straight to the new owner


async def test_ask_sends_asking_and_the_command_to_the_importing_node(
    world: FakeCluster, wire: ClusterWire
) -> None:
    kept = key_on(world.a, "k")
    await wire.execute(("RPUSH", kept, "here"))
    world.migrating[key_slot(kept)] = world.b
    fresh = kept.replace("}", "}new")  # same slot, not on a: asked to b
    replies = await wire.execute(("RPUSH", kept, "more"), ("RPUSH", fresh, "1"), ("WAIT", 0, 0))
    assert replies == [2, 1, 0]  # a redirected batch's WAIT confirms nothing
    assert world.a.store[kept.encode()] == [b"here", b"more"]
    assert world.b.store == {fresh.encode(): [b"1"]}
    assert world.b.names()[-3:] == [b"ASKING", b"RPUSH", b"WAIT"]
    assert wire.slot_map is not None and wire.slot_map.node_of(key_slot(kept)) == world.a.address
    block = kept.replace("}", "}block")
    replies = await wire.execute(("MULTI",), ("RPUSH", block, "1"), ("RPUSH", block, "2"), ("EXEC",))
    assert replies == [b"OK", b"QUEUED", b"QUEUED", [1, 2]]
    assert world.b.names()[-5:] == [b"ASKING", b"MULTI", b"RPUSH", b"RPUSH", b"EXEC"]
    assert world.b.store[block.encode()] == [b"1", b"2"]


async def test_a_wait_confirms_nothing_when_the_write_and_its_mark_ran_on_two_nodes(
    world: FakeCluster, wire: ClusterWire
) -> None:
    # slot migrating a -> b: the stream is still on a, the mark is not, so ASK sends the mark
    # (and the WAIT after it) to b while the write ran on a: b's WAIT says nothing of the write
    stream = key_on(world.a, "s")
    mark = stream + "mark"
    await wire.execute(("RPUSH", stream, "first"))
    world.migrating[key_slot(stream)] = world.b
    replies, redirected = await wire.execute_noting(
        ("RPUSH", stream, "w"), ("RPUSH", mark, "1"), ("WAIT", 1, 100)
    )
    assert world.a.store[stream.encode()] == [b"first", b"w"]
    assert world.b.store == {mark.encode(): [b"1"]}
    assert (replies, redirected) == ([2, 1, 0], True)
    # a round: the write went out alone (not redirected), its mark and WAIT later, redirected
    assert await wire.execute_noting(("RPUSH", stream, "w2")) == ([3], False)
    assert await wire.execute_noting(("RPUSH", mark, "2"), ("WAIT", 1, 100)) == ([2, 0], True)
    assert await wire.execute_noting(("RPUSH", mark, "3")) == ([3], True)  # one command alone too
    world.migrating.clear()
    assert await wire.execute_noting(("RPUSH", stream, "w3"), ("WAIT", 1, 100)) == ([4, world.a.port], False)


async def test_tryagain_is_resent_after_a_pause_then_raised(world: FakeCluster, wire: ClusterWire) -> None:
    key = key_on(world.b, "t")
    await wire.execute(("PING",))
    world.tryagain = 2
    assert await wire.execute(("RPUSH", key, "1")) == [1]
    world.tryagain = 100
    with pytest.raises(TryAgainError):
        await wire.execute(("RPUSH", key, "2"))
    assert world.b.store == {key.encode(): [b"1"]}


async def test_noscript_loads_the_registered_script_on_that_node_and_resends(
    world: FakeCluster, wire: ClusterWire
) -> None:
    source = "return redis.call('RPUSH', KEYS[1], 'script')"
    sha = wire.register(source)
    assert sha == hashlib.sha1(source.encode()).hexdigest()
    a, b = key_on(world.a, "s"), key_on(world.b, "s")
    world.b.scripts.add(sha)  # b has it, a does not
    replies = await wire.execute(("EVALSHA", sha, 1, a), ("EVALSHA", sha, 1, b))
    assert replies == [b"ran", b"ran"]
    assert world.a.names().count(b"SCRIPT") == 1 and world.b.names().count(b"SCRIPT") == 0
    with pytest.raises(NoScriptError):  # not registered: raised as on one node
        await wire.execute(("EVALSHA", "0" * 40, 1, a))


async def test_a_node_lost_fails_its_share_while_the_other_s_replies_arrive(
    world: FakeCluster, wire: ClusterWire
) -> None:
    a, b = key_on(world.a, "l"), key_on(world.b, "l")
    await wire.execute(("RPUSH", a, "0"), ("RPUSH", b, "0"))
    asked = world.a.names().count(b"CLUSTER")
    world.b.drop_on = b"boom"
    with pytest.raises(redis.ConnectionError):
        await wire.execute(("RPUSH", a, "1"), ("RPUSH", b, "boom"), ("RPUSH", a, "2"))
    assert world.a.store[a.encode()] == [b"0", b"1", b"2"]
    await wait_until(lambda: world.a.names().count(b"CLUSTER") > asked)  # a refresh followed
    world.b.drop_on = None
    assert await wire.execute(("RPUSH", b, "again"), ("RPUSH", a, "3")) == [2, 4]  # reconnected


async def test_a_dedicated_connection_follows_its_slot(world: FakeCluster, wire: ClusterWire) -> None:
    key = key_on(world.a, "d")
    await wire.execute(("RPUSH", key, "1"))
    dedicated = wire.dedicated(key_slot(key))
    assert await dedicated.execute(("LRANGE", key, 0, -1)) == [[b"1"]]
    assert dedicated.connection == (1, world.a.address)
    world.owners[key_slot(key)] = world.b
    world.b.store[key.encode()] = world.a.store.pop(key.encode())
    assert await dedicated.execute(("LRANGE", key, 0, -1)) == [[b"1"]]
    assert dedicated.connection == (1, world.b.address)
    dedicated.close()
    assert dedicated.connection is None


async def test_one_command_alone_is_redirected_and_reloaded_too(
    world: FakeCluster, wire: ClusterWire
) -> None:
    """A batch of one command takes a shorter path (the hot path's publish, read and ack): it
    follows MOVED, ASK and NOSCRIPT as a batch does."""
    key = key_on(world.a, "one")
    await wire.execute(("RPUSH", key, "0"))
    world.owners[key_slot(key)] = world.b
    assert await wire.execute(("RPUSH", key, "1")) == [1]  # MOVED, resent to b
    assert world.b.store == {key.encode(): [b"1"]}
    fresh = key_on(world.a, "two")
    world.migrating[key_slot(fresh)] = world.b
    assert await wire.execute(("RPUSH", fresh, "x")) == [1]  # ASK
    assert world.b.names()[-2:] == [b"ASKING", b"RPUSH"]
    sha = wire.register("return redis.call('RPUSH', KEYS[1], 'script')")
    third = key_on(world.a, "three")
    assert await wire.execute(("EVALSHA", sha, 1, third)) == [b"ran"]
    assert world.a.names().count(b"SCRIPT") == 1
