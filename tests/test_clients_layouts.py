"""The clients on both key layouts (`bus_url`: the session's single node, and its one-node
cluster, which refuses what crosses slots as a real cluster does): what they write is read back
directly on Redis, where a hub reads it; what they read (status, results, dead letters, hub
snapshots) is written as a hub writes it. End to end with a live hub: tests/test_clients.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from actionhub import BusError, ConfigurationError
from actionhub.bus.redis import results, scripts
from actionhub.bus.redis.entries import dead_letter_fields
from actionhub.bus.redis.keys import Keys
from actionhub.bus.redis.layout import keys_for
from actionhub.bus.redis.options import connect, split_url
from actionhub.client import AsyncClient, Client
from actionhub.client._ops import Operations
from actionhub.inspect import HubSnapshot
from actionhub.message import Message
from actionhub.results import MessageStatus, encode, rank
from tests.test_clients import FLAVOURS, AsyncioThread, Flavour


@pytest.fixture(params=FLAVOURS)
async def client(request: pytest.FixtureRequest, bus_url: str) -> AsyncIterator[Flavour]:
    flavour = Flavour(request.param, f"{bus_url}&block=0.2")
    yield flavour
    await flavour.close()


@pytest.fixture
def redis_of(bus_url: str) -> Iterator[tuple[Any, Keys]]:
    """A plain redis-py client of the bus (a `RedisCluster` for the cluster) and its key names."""
    redis_url, options = split_url(bus_url)
    raw = connect(redis_url, options)
    yield raw, keys_for(options)
    raw.close()


def _messages(raw: Any, stream: str) -> list[dict[str, Any]]:
    return [orjson.loads(fields[b"message"]) for _, fields in raw.xrange(stream)]


async def test_publishes_go_where_the_hub_reads_them(client: Flavour, redis_of: tuple[Any, Keys]) -> None:
    raw, keys = redis_of
    one = await client.call("publish", "record", {"n": 0}, headers={"from": client.name})
    assert [(m["id"], m["payload"], m["headers"]) for m in _messages(raw, keys.stream("record"))] == [
        (one, {"n": 0}, {"from": client.name})
    ]
    # keyed, in batches of one (topic, slot) on a cluster: each key's messages in order, in the
    # partition stream the hub computes (the topic's count set as the hub sets it)
    ids = await client.call("publish_many", "orders", list(range(6)), keys=["a", "b", "c"] * 2)
    assert raw.get(keys.partitions("orders")) == b"16"
    for n, key in enumerate("abc"):
        found = [
            (m["id"], m["payload"], m["key"]) for m in _messages(raw, keys.keyed_stream("orders", key, 16))
        ]
        assert found == [(ids[n], n, key), (ids[n + 3], n + 3, key)]
    # delayed: a member of the delayed set of the target's slot (one set on a single node)
    later = await client.call("publish", "orders", "later", key="a", delay=60)
    target = keys.keyed_stream("orders", "a", 16)
    delayed = keys.delayed if type(keys) is Keys else keys.delayed_of(target)  # type: ignore[attr-defined]
    (member,) = raw.zrange(delayed, 0, -1)
    kind, where, group, entry = orjson.loads(member)
    assert (kind, where, group, orjson.loads(entry)["id"]) == ("x", target, "", later)
    # deduplicated: the second publish writes nothing and returns the first id
    first = await client.call("publish", "record", 1, dedupe_key="d-1")
    assert await client.call("publish", "record", 2, dedupe_key="d-1") == first
    assert [m["id"] for m in _messages(raw, keys.stream("record"))] == [one, first]


async def test_a_kept_topic_reads_pending_then_its_result(
    client: Flavour, redis_of: tuple[Any, Keys]
) -> None:
    raw, keys = redis_of
    for command in results.keep_results(keys, "kept", "workers", 60):  # as a keep_result group's hub
        raw.execute_command(*command)
    one = await client.call("publish", "kept", 1)
    raw.script_flush()  # the statuses' script is loaded again, on whichever node misses it
    many = await client.call("publish_many", "kept", [2, 3, 4, 5], keys=[None, "a", None, "b"])
    for message_id in [one, *many]:
        status = await client.call("status", message_id)
        assert (status.state, status.topic) == ("pending", "kept")
    done = MessageStatus(one, "done", topic="kept", group="workers", attempt=1, at=1.0, result={"ok": 1})
    script_keys, args = results.write_status(keys, one, encode(done), 60, final=True, rank=rank("done", 1))
    raw.execute_command("EVAL", scripts.WRITE_STATUS, len(script_keys), *script_keys, *args)
    assert await client.call("result", one, 5) == {"ok": 1}
    assert (await client.call("status", "never-published")).state == "unknown"


async def test_dead_letters_list_requeue_and_purge(client: Flavour, redis_of: tuple[Any, Keys]) -> None:
    raw, keys = redis_of
    raw.set(keys.partitions("fail"), 4)
    letters = {}
    for name, key in [("plain", None), ("keyed", "k")]:
        message = Message("fail", name, id=f"{name}-id", key=key)
        fields = dead_letter_fields(
            message.encode(),
            topic="fail",
            group="g",
            reason="failed",
            attempts=3,
            error="boom",
            traceback=None,
        )
        letters[name] = raw.xadd(keys.dead("fail"), fields).decode()  # type: ignore[arg-type]
    listed = await client.call("dead_letters", "fail")
    assert [(letter.id, letter.message.payload, letter.attempts) for letter in listed] == [
        (letters["plain"], "plain", 3),
        (letters["keyed"], "keyed", 3),
    ]
    # a keyed letter goes back to its key's partition (on a cluster: another slot, XADD then XDEL)
    assert await client.call("requeue_dead_letters", "fail", [letters["keyed"]]) == 1
    assert [m["payload"] for m in _messages(raw, keys.keyed_stream("fail", "k", 4))] == ["keyed"]
    assert await client.call("requeue_dead_letters", "fail") == 1
    assert [m["payload"] for m in _messages(raw, keys.stream("fail"))] == ["plain"]
    assert raw.xlen(keys.dead("fail")) == 0
    raw.xadd(keys.dead("fail"), {"message": b"{}"})
    assert await client.call("purge_dead_letters", "fail") == 1
    assert await client.call("dead_letters", "fail") == []


async def test_hubs_are_read_from_any_slot(client: Flavour, redis_of: tuple[Any, Keys]) -> None:
    raw, keys = redis_of
    for name in ["alpha", "beta", "gamma"]:  # untagged: three slots on a cluster
        snapshot = HubSnapshot(name, "host", 1, "bus", started_at=1.0, at=2.0, groups=())
        raw.set(keys.hub(name), snapshot.to_json(), ex=60)
    assert [snapshot.hub for snapshot in await client.call("hubs")] == ["alpha", "beta", "gamma"]
    (answer, *_) = await client.call("command", "pause", "nobody", timeout=0.1)
    assert answer.outcome == "silent"  # the snapshots are not live hubs: none answers


async def test_key_names_are_the_layout_s(client: Flavour, redis_of: tuple[Any, Keys]) -> None:
    _, keys = redis_of
    names = dict(await client.call("key_names", "orders", "a", partitions=3))
    assert names["stream"] == keys.stream("orders") and names["dead"] == keys.dead("orders")
    assert [names[f"p{p}"] for p in range(3)] == [keys.partition("orders", p) for p in range(3)]
    assert names["key"] == keys.keyed_stream("orders", "a", 3)
    # the count is read, not set: a topic without one has no partition streams yet
    assert "p0" not in dict(await client.call("key_names", "fresh"))


def test_the_layout_must_match_the_data(cluster_url: str, redis_url: str) -> None:
    with Client(cluster_url) as first:
        first.publish("record", 1)
    with (
        Client(f"{cluster_url}&shards=32") as other,
        pytest.raises(ConfigurationError, match="'cluster:64:1'"),
    ):
        other.publish("record", 1)
    asyncio = AsyncioThread()
    try:
        other_async = asyncio.run(_async_client(f"{cluster_url}&shards=32"))
        with pytest.raises(ConfigurationError, match="laid out as 'cluster:64:1'"):
            asyncio.run(other_async.publish("record", 1))
        asyncio.run(other_async.aclose())
    finally:
        asyncio.close()
    # a single node laid out for a cluster, then used as a single node
    with Client(f"{redis_url}&layout=cluster") as laid_out:
        laid_out.publish("record", 1)
    with Client(redis_url) as single, pytest.raises(ConfigurationError, match="laid out as 'cluster"):
        single.status("x")


async def _async_client(url: str) -> AsyncClient:
    return AsyncClient(url)


@pytest.mark.parametrize("name", FLAVOURS)
async def test_a_cluster_s_failures_are_one_clear_error(name: str, cluster_url: str) -> None:
    unreachable = Flavour(name, "redis+cluster://127.0.0.1:1,127.0.0.1:2/0")  # nothing listens there
    try:
        with pytest.raises(BusError, match=r"publish: .*cannot be connected.*bus redis\+cluster"):
            await unreachable.call("publish", "record", 1)
    finally:
        await unreachable.close()
    if name == "asyncio":
        with pytest.raises(ConfigurationError, match="durable= is not supported by the asyncio client"):
            Flavour(name, f"{cluster_url}&durable=1")
        return
    # the write and its WAIT go to the node of the write's slot: no replica there confirms it
    alone = Flavour(name, f"{cluster_url}&durable_timeout=0.05")
    try:
        with pytest.raises(BusError, match="publish may not be durable"):
            await alone.call("publish", "orders", 1, key="k", durable=1)
        with pytest.raises(BusError, match="publish may not be durable"):
            await alone.call("publish_many", "orders", [1, 2], keys=["a", "b"], durable=1)
    finally:
        await alone.close()


def test_a_transaction_across_slots_is_refused_before_redis(cluster_url: str) -> None:
    operations = Operations(split_url(cluster_url)[1])
    with pytest.raises(BusError, match="cross-slot"):
        operations._transaction([("XADD", operations.keys.stream("a"), "*", "m", "1"), ("XDEL", "b", "1-1")])
