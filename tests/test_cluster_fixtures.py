"""The cluster fixture (`actionhub.testing.RedisCluster`) the cluster transport's tests stand on:
3 primaries with a replica each, a slot moved with a stream and its consumer group, a primary
killed and replaced by its replica, everything stopped and removed afterwards."""

from __future__ import annotations

import os

import pytest
import redis
from redis.exceptions import AskError, MovedError

from actionhub.bus.redis.layout import shard_tag
from actionhub.bus.redis.slots import SlotMap
from actionhub.testing import RedisCluster
from tests.servers import private_cluster


def test_create_reshard_fail_over_and_stop() -> None:
    with private_cluster() as cluster:
        directories = [node.directory for node in cluster.nodes]
        primaries = cluster.primaries()
        assert len(primaries) == 3 and all(len(cluster.replicas_of(p)) == 1 for p in primaries)
        shards = cluster.shards()
        assert (
            sorted((len(nodes), sorted(n["role"] for n in nodes)) for _, nodes in shards)
            == [(2, ["master", "replica"])] * 3
        )
        assert all(n["health"] == "online" for _, nodes in shards for n in nodes)
        slots = SlotMap.from_shards(cluster.call(primaries[0], "CLUSTER", "SHARDS"), host="127.0.0.1")
        assert slots.covered
        assert {slots.node_of(s)[1] for s in (0, 8000, 16383)} == {p.port for p in primaries}  # type: ignore[index]

        # a stream with a consumer group and pending entries, in the slot of shard 0's tag (54)
        stream, other = (f"actionhub:{{{shard_tag(0, 64)}}}{name}" for name in ("orders", "other"))
        source = cluster.primary_of(54)
        with redis.Redis(port=source.port) as client:
            for i in range(100):
                client.xadd(stream, {"message": str(i)})
            client.xgroup_create(stream, "g", id="0")
            assert len(client.xreadgroup("g", "c", {stream: ">"}, count=10)[0][1]) == 10
            client.set(other, "x")
        target = next(p for p in primaries if p is not source)
        cluster.open_migration(54, target, keys=[stream])  # held open: the stream moved, not `other`
        with redis.Redis(port=source.port) as client:
            with pytest.raises(AskError) as asked:
                client.xlen(stream)
            assert (type(asked.value), asked.value.slot_id, asked.value.port) == (AskError, 54, target.port)
            assert client.get(other) == b"x"
        cluster.finish_migration(54)
        assert cluster.primary_of(54) is target
        with redis.Redis(port=target.port) as client:
            assert client.xlen(stream) == 100
            (group,) = client.xinfo_groups(stream)
            assert (group["name"], group["pending"]) == (b"g", 10)
        with redis.Redis(port=source.port) as client, pytest.raises(MovedError) as moved:
            client.xlen(stream)
        assert (moved.value.slot_id, moved.value.port) == (54, target.port)

        # SIGKILL the stream's primary: its replica takes over, with the stream
        with redis.Redis(port=target.port) as client:
            assert client.execute_command("WAIT", 1, 5000) == 1
        (replica,) = cluster.replicas_of(target)
        cluster.kill(target)
        assert cluster.wait_for_promotion(target) is replica
        assert cluster.primary_of(54) is replica and target not in cluster.live
        with redis.Redis(port=replica.port) as client:
            assert client.xlen(stream) == 100 and client.xinfo_groups(stream)[0]["pending"] == 10

        # the old primary returns as its replica; a graceful failover gives it its slots back
        cluster.revive(target)
        assert cluster.replicas_of(replica) == [target]
        cluster.failover(target)
        assert cluster.primary_of(54) is target and cluster.replicas_of(target) == [replica]
    assert not any(os.path.exists(d) for d in directories)
    assert all(node._process is None for node in cluster.nodes)


def test_sizes_a_cluster_cannot_have() -> None:
    for sizes in ({"primaries": 2}, {"primaries": 1, "replicas": 1}, {"primaries": 3, "replicas": -1}):
        with pytest.raises(ValueError, match="at least 3 primaries"):
            RedisCluster(**sizes)
