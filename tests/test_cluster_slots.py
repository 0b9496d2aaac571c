"""Cluster routing sans I/O (bus/redis/slots.py), checked against a real one-node cluster:
its CLUSTER KEYSLOT, COMMAND GETKEYS and CLUSTER SHARDS, and its CROSSSLOT refusals."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

from actionhub.bus.redis.layout import ClusterKeys
from actionhub.bus.redis.slots import SlotMap, command_keys, key_slot, slot_of
from actionhub.errors import BusError
from actionhub.testing import RedisCluster
from tests.servers import private_cluster
from tests.test_cluster_layout import operations

#: One of each command shape actionhub sends, with the keys it touches.
SHAPES: list[tuple[tuple[str | int, ...], list[str]]] = [
    (("XADD", "s", "MAXLEN", "~", 10, "*", "message", "m"), ["s"]),
    (("XACK", "s", "g", "1-1", "1-2"), ["s"]),
    (("XDEL", "s", "1-1"), ["s"]),
    (("XLEN", "s"), ["s"]),
    (("XRANGE", "s", "-", "+", "COUNT", 5), ["s"]),
    (("XREVRANGE", "s", "+", "-", "COUNT", 1), ["s"]),
    (("XCLAIM", "s", "g", "c", 0, "1-1", "JUSTID"), ["s"]),
    (("XAUTOCLAIM", "s", "g", "c", 0, "0-0"), ["s"]),
    (("XPENDING", "s", "g", "-", "+", 10), ["s"]),
    (("XTRIM", "s", "MINID", "~", "1-1"), ["s"]),
    (("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"), ["s"]),
    (("XINFO", "GROUPS", "s"), ["s"]),
    (("SET", "k", "v", "NX", "GET", "PX", 100), ["k"]),
    (("GET", "k"), ["k"]),
    (("EXPIRE", "k", 60), ["k"]),
    (("LPUSH", "r", "v"), ["r"]),
    (("ZADD", "z", "NX", 1, "m"), ["z"]),
    (("ZREM", "z", "m"), ["z"]),
    (("MGET", "a", "b", "c"), ["a", "b", "c"]),
    (("DEL", "a", "b"), ["a", "b"]),
    (("EVALSHA", "0" * 40, 2, "a", "b", "arg1", "arg2"), ["a", "b"]),
    (("EVALSHA", "0" * 40, 0, "arg"), []),
    (("XREAD", "COUNT", 10, "BLOCK", 1000, "STREAMS", "s1", "s2", "$", "0-0"), ["s1", "s2"]),
    (("XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "BLOCK", 10, "NOACK", "STREAMS", "s", ">"), ["s"]),
    (("XREADGROUP", "GROUP", "STREAMS", "COUNT", "STREAMS", "s1", "s2", ">", ">"), ["s1", "s2"]),
    (("BLPOP", "r1", "r2", 5), ["r1", "r2"]),
    (("BLMOVE", "src", "dst", "LEFT", "RIGHT", 5), ["src", "dst"]),
]
KEYLESS = [
    ("PING",),
    ("WAIT", 1, 100),
    ("MULTI",),
    ("EXEC",),
    ("SCRIPT", "LOAD", "return 1"),
    ("CLUSTER", "SHARDS"),
    ("PUBLISH", "channel", "m"),
    ("CLIENT", "SETNAME", "x"),
]


def test_key_slots_follow_the_hash_tag_rules() -> None:
    """The examples of the Redis Cluster specification."""
    assert key_slot("foo") == key_slot(b"foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot(b"foo{}{bar}")  # empty tag: the whole key
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    assert key_slot("naïve{é}") == key_slot("é".encode())


@pytest.mark.parametrize(("command", "keys"), SHAPES)
def test_command_keys(command: tuple[str | int, ...], keys: list[str]) -> None:
    assert command_keys(command) == [key.encode() for key in keys]
    assert command_keys(tuple(str(a).encode() if isinstance(a, str) else a for a in command)) == command_keys(
        command
    )


def test_slot_of_commands() -> None:
    for command in KEYLESS:
        assert command_keys(command) == [] and slot_of(command) is None
    assert slot_of(
        ("MULTI",), ("XADD", "{t}s", "*", "m", "x"), ("XDEL", "{t}d", "1-1"), ("EXEC",)
    ) == key_slot("t")
    with pytest.raises(BusError, match="cross-slot command"):
        slot_of(("MULTI",), ("XADD", "{t}s", "*", "m", "x"), ("XDEL", "{u}d", "1-1"), ("EXEC",))
    with pytest.raises(BusError, match="cross-slot command"):
        slot_of(("MGET", "a", "b"))
    with pytest.raises(BusError, match="no cluster routing rule for HSET"):
        command_keys(("HSET", "h", "f", "v"))


def shard(slots: list[int], *nodes: list[object]) -> list[object]:
    return [b"slots", slots, b"nodes", list(nodes)]


def node(port: int, role: bytes, health: bytes = b"online", endpoint: bytes = b"127.0.0.1") -> list[object]:
    """A node of a CLUSTER SHARDS reply, flat as RESP2 has it."""
    fields = [b"id", b"%040d" % port, b"port", port, b"ip", endpoint, b"endpoint", endpoint, b"role", role]
    return [*fields, b"replication-offset", 14, b"health", health]


#: CLUSTER SHARDS the way redis-server 7.0.15 answered after a primary (20001) was killed and its
#: replica (20004) promoted: the dead one is listed alone, without slots. 20004 and 20003 announce
#: no endpoint (empty, or "?" with cluster-preferred-endpoint-type unknown-endpoint).
SHARDS_AFTER_FAILOVER = [
    shard([0, 100, 5461, 10922], node(20002, b"master"), node(20005, b"replica")),
    shard([101, 5460], node(20004, b"master", endpoint=b"")),
    shard([10923, 16383], node(20003, b"master", endpoint=b"?")),
    shard([], node(20001, b"master", health=b"fail")),
]


def test_slot_map_from_shards() -> None:
    slots = SlotMap.from_shards(SHARDS_AFTER_FAILOVER, host="10.0.0.9")
    assert slots.covered
    assert [slots.node_of(s) for s in (0, 100, 101, 5460, 5461, 10922, 10923, 16383)] == [
        ("127.0.0.1", 20002),
        ("127.0.0.1", 20002),
        ("10.0.0.9", 20004),
        ("10.0.0.9", 20004),
        ("127.0.0.1", 20002),
        ("127.0.0.1", 20002),
        ("10.0.0.9", 20003),
        ("10.0.0.9", 20003),
    ]
    assert slots.primaries == [("127.0.0.1", 20002), ("10.0.0.9", 20004), ("10.0.0.9", 20003)]
    assert slots.replicas[("127.0.0.1", 20002)] == (("127.0.0.1", 20005),)
    slots.moved(101, ("127.0.0.1", 20002))
    assert slots.node_of(101) == ("127.0.0.1", 20002) and slots.node_of(102) == ("10.0.0.9", 20004)


def test_slot_map_from_slots_and_gaps() -> None:
    reply = [
        [0, 8191, [b"127.0.0.1", 20001, b"a" * 40], [b"127.0.0.1", 20004, b"b" * 40]],
        [8192, 16000, [b"", 20002, b"c" * 40]],
    ]
    slots = SlotMap.from_slots(reply, host="h")
    assert slots.node_of(0) == ("127.0.0.1", 20001) and slots.node_of(9000) == ("h", 20002)
    assert slots.replicas[("127.0.0.1", 20001)] == (("127.0.0.1", 20004),)
    assert not slots.covered and slots.node_of(16001) is None


@pytest.fixture(scope="module")
def one_node() -> Iterator[tuple[RedisCluster, redis.Redis]]:
    """A cluster of one node holding every slot: it still refuses cross-slot commands."""
    with private_cluster(primaries=1, replicas=0) as cluster:
        client = redis.Redis(port=cluster.nodes[0].port)
        yield cluster, client
        client.close()


def test_key_slots_agree_with_redis(one_node: tuple[RedisCluster, redis.Redis]) -> None:
    _, client = one_node
    rng = random.Random(20)
    keys = ["", "{", "}", "{}", "{}}", "}{a}", "a{b}c{d}", "{#m}1}status", "actionhub:{46.343}orders"]
    keys += ["".join(rng.choice("ab{}:#é0") for _ in range(rng.randrange(1, 12))) for _ in range(300)]
    keys += [ClusterKeys().partition(f"topic-{i}", p) for i in range(10) for p in range(4)]
    for key in keys:
        assert client.execute_command("CLUSTER", "KEYSLOT", key) == key_slot(key), key


def test_command_keys_agree_with_redis(one_node: tuple[RedisCluster, redis.Redis]) -> None:
    _, client = one_node
    for command, _ in SHAPES:
        if command[0] == "EVALSHA" and command[2] == 0:
            continue  # no key: Redis answers an error rather than []
        assert [k.encode() for k in client.command_getkeys(*command)] == command_keys(command), command


def test_slot_map_of_a_real_cluster(one_node: tuple[RedisCluster, redis.Redis]) -> None:
    cluster, client = one_node
    slots = SlotMap.from_shards(client.execute_command("CLUSTER", "SHARDS"), host="127.0.0.1")
    assert slots.covered and slots.primaries == [("127.0.0.1", cluster.nodes[0].port)]


def test_redis_accepts_each_layout_operation_and_refuses_cross_slot(
    one_node: tuple[RedisCluster, redis.Redis],
) -> None:
    """What the slot function says, the server agrees with: each operation's keys, declared to
    one script, are accepted; two slots on the one node are refused."""
    _, client = one_node
    for commands in (c for ops in operations("orders", "}m").values() for c in ops):
        keys = [key for command in commands for key in command_keys(command)]
        assert client.eval("return #KEYS", len(keys), *keys) == len(keys)
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        client.mget("{a}x", "{b}x")
