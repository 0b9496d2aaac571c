"""The cluster layout's scripts (scripts_cluster.py) on a one-node cluster, which refuses what
crosses slots as a real one does: each runs on the keys of one slot and declares them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from actionhub.bus.redis import scripts_cluster as sc
from actionhub.bus.redis.entries import delayed_member
from actionhub.bus.redis.layout import ClusterKeys
from actionhub.bus.redis.once import entry_prefix
from actionhub.bus.redis.options import connect, split_url
from tests.servers import private_redis


@pytest.fixture
def cluster(cluster_url: str) -> Iterator[Any]:
    client = connect(*split_url(cluster_url))
    yield client
    client.close()


def test_every_script_declares_its_keys(cluster: Any) -> None:
    keys = ClusterKeys(f"t-{uuid.uuid4().hex[:8]}:")
    stream = keys.stream("orders")
    elsewhere = keys.stream("invoices")
    assert keys.slot_of(stream) != keys.slot_of(elsewhere)
    publish = cluster.register_script(sc.PUBLISH_ONCE_C)
    # a key of another slot, undeclared: refused
    bad = sc.SHEBANG + "redis.call('SET', ARGV[1], 1) return 1"
    with pytest.raises(redis.ResponseError):
        cluster.register_script(bad)(keys=[stream], args=[elsewhere])
    delayed = keys.delayed_of(stream)
    raw = b'{"id":"m1","x":1}'
    assert publish(keys=[stream, stream, stream], args=[raw, "m1", "x", 0, 0, b"", 0, b""]) == b"m1"
    assert cluster.xlen(stream) == 1
    # a resend finds its entry
    assert (
        publish(keys=[stream, stream, stream], args=[raw, "m1", "x", 0, 5000, entry_prefix("m1"), 0, b""])
        == b"m1"
    )
    assert cluster.xlen(stream) == 1
    # dedupe
    dedupe = keys.dedupe("orders", "k", target=stream)
    args = [b'{"id":"m2"}', "m2", "x", 60000, 0, b"", 0, b""]
    assert publish(keys=[stream, dedupe, stream], args=args) == b"m2"
    args[1] = "m3"
    assert publish(keys=[stream, dedupe, stream], args=args) == b"m2"
    assert cluster.xlen(stream) == 2
    # delayed, then moved when due
    member = delayed_member("x", stream, "", b'{"id":"m4"}')
    args = [b'{"id":"m4"}', "m4", "x", 0, 0, b"", 0.001, member]
    assert publish(keys=[stream, stream, delayed], args=args) == b"m4"
    due = cluster.register_script(sc.DUE)
    while True:
        wait, *members = due(keys=[delayed], args=[500])
        if members:
            break
    assert members == [member] and float(wait) == -1
    move = cluster.register_script(sc.MOVE_DUE_C)
    assert move(keys=[delayed, stream], args=members) == 1
    assert move(keys=[delayed, stream], args=members) == 0  # another hub moved it: nothing twice
    assert cluster.xlen(stream) == 3
    # many, one slot
    many = cluster.register_script(sc.PUBLISH_MANY_ONCE_C)
    assert many(keys=[stream, stream], args=["x", 0, b"", b'{"id":"a","n":1}', b'{"id":"b","n":2}']) == 2
    assert (
        many(
            keys=[stream, stream],
            args=["x", 5000, entry_prefix("a"), b'{"id":"a","n":1}', b'{"id":"b","n":2}'],
        )
        == 0
    )
    assert cluster.xlen(stream) == 5
    # pending, NX
    pending = cluster.register_script(sc.PENDING)
    assert pending(keys=[keys.status("m1")], args=["orders", "60"]) == 1
    assert pending(keys=[keys.status("m1")], args=["orders", "60"]) == 0
    assert json.loads(cluster.get(keys.status("m1")))["state"] == "pending"
    # topic info of one slot
    info = cluster.register_script(sc.TOPIC_INFO_SLOT)
    cluster.zadd(delayed, {delayed_member("x", stream, "", b"{}").decode(): 1e12})
    start = orjson.dumps(["x", stream])[:-1] + b","
    document = json.loads(info(keys=[stream, keys.dead("orders"), delayed], args=[1, "1", 100, start]))
    assert document["streams"][0][0] == 5 and document["dead"] == 0 and document["delayed"] == 1


def test_what_reads_or_moves_runs_when_redis_is_out_of_memory() -> None:
    """Under ``maxmemory`` (noeviction, exceeded) a script with a shebang is refused whole unless
    its flags say otherwise: DUE and TOPIC_INFO_SLOT only read (no-writes); MOVE_DUE_C removes a
    member before writing it (allow-oom, as the single layout's MOVE_DUE runs: its first write,
    ZREM, frees memory, so Redis lets the rest through). Publishing stays refused."""
    keys = ClusterKeys("oom:")
    stream = keys.stream("orders")
    delayed = keys.delayed_of(stream)
    member = delayed_member("x", stream, "", b'{"id":"m1"}')
    with private_redis(appendonly=False, extra_args=("--maxmemory-policy", "noeviction")) as server:
        client = redis.Redis.from_url(server.url)
        client.zadd(delayed, {member: 1})
        client.xadd(stream, {"message": b"{}"})
        for script in (sc.DUE, sc.TOPIC_INFO_SLOT, sc.MOVE_DUE_C, sc.PUBLISH_MANY_ONCE_C):
            client.script_load(script)  # loading is a write: refused once out of memory
        client.config_set("maxmemory", 1)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("grows", 1)
        wait, *members = client.register_script(sc.DUE)(keys=[delayed], args=[500])
        assert members == [member] and float(wait) == -1
        info = client.register_script(sc.TOPIC_INFO_SLOT)
        start = orjson.dumps(["x", stream])[:-1] + b","
        document = json.loads(info(keys=[stream, delayed], args=[1, "0", 100, start]))
        assert document["streams"][0][0] == 1 and document["delayed"] == 1
        assert client.register_script(sc.MOVE_DUE_C)(keys=[delayed, stream], args=members) == 1
        assert client.xlen(stream) == 2 and client.zcard(delayed) == 0
        many = client.register_script(sc.PUBLISH_MANY_ONCE_C)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            many(keys=[stream], args=["x", 0, b"", b'{"id":"m2"}'])
