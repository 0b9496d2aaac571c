"""Deduplicated publishes (``dedupe_key=``, ``dedupe_for=``) and idempotent ones (a publish whose
reply was lost and that is resent is written once): on memory:// with trio's mock clock, on a
real Redis through the hub and the clients, under concurrent processes and a proxy that loses
replies or requests."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import redis
import trio

from actionhub import ActionHub, BusError, ConfigurationError, Job
from actionhub.bus.dedupe import DedupeWindows, MessageIds, check_dedupe
from actionhub.bus.redis.keys import Keys
from actionhub.bus.redis.once import KEPT_RECHECK, KeptTopics
from actionhub.client import AsyncClient, Client, TrioClient
from actionhub.testing import RedisServer
from tests.chaos.proxy import ChaosProxy
from tests.layouts import on_redis
from tests.polling import wait_until

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ROOT = Path(__file__).parent.parent


def prefix_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["prefix"][0]


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis(port=redis_server.port)


def counting_hub(url: str, topic: str, seen: list[Any]) -> ActionHub:
    hub = ActionHub(url)

    @hub.action(topic)
    async def record(job: Job) -> None:
        seen.append(job.payload)

    return hub


# --------------------------------------------------------------------------- the boundary

BAD = [
    ({"dedupe_for": 10}, "dedupe_for needs a dedupe_key"),
    ({"dedupe_key": ""}, "dedupe_key must be a non-empty string"),
    ({"dedupe_key": "k" * 1025}, "dedupe_key must be a non-empty string"),
    ({"dedupe_key": 42}, "dedupe_key must be a non-empty string"),
    ({"dedupe_key": "k", "dedupe_for": 0}, "dedupe_for must be > 0"),
    ({"dedupe_key": "k", "dedupe_for": -1}, "dedupe_for must be > 0"),
    ({"dedupe_key": "k", "dedupe_for": 40 * 86400}, "at most 2592000"),
    ({"dedupe_key": "k", "dedupe_for": math.nan}, "dedupe_for must be a number"),
    ({"dedupe_key": "k", "dedupe_for": math.inf}, "dedupe_for must be a number"),
    ({"dedupe_key": "k", "dedupe_for": True}, "dedupe_for must be a number"),
    ({"dedupe_key": "k", "dedupe_for": "60"}, "dedupe_for must be a number"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD)
async def test_bad_dedupe_arguments_fail_with_a_clear_error_and_publish_nothing(
    arguments: dict[str, Any], message: str, autojump_clock: trio.abc.Clock
) -> None:
    seen: list[Any] = []
    hub = counting_hub("memory://", "work", seen)
    async with hub.running():
        with pytest.raises(ConfigurationError, match=message):
            await hub.publish("work", 1, **arguments)
        await trio.sleep(1)
    assert seen == []


@pytest.mark.parametrize(("arguments", "message"), BAD)
def test_the_clients_refuse_bad_dedupe_arguments_before_any_redis_call(
    arguments: dict[str, Any], message: str
) -> None:
    client = Client("redis://127.0.0.1:1/0")  # nothing listens: a call would fail differently
    with pytest.raises(ConfigurationError, match=message):
        client.publish("work", 1, **arguments)


def test_check_dedupe_defaults_to_an_hour() -> None:
    assert check_dedupe(None, None) is None
    dedupe = check_dedupe("invoice-42", None)
    assert dedupe is not None and (dedupe.key, dedupe.seconds) == ("invoice-42", 3600.0)
    assert check_dedupe("k", 5) == check_dedupe("k", 5.0)


def test_dedupe_keys_of_different_topics_never_alias() -> None:
    keys = Keys("p:")
    # topics may hold ':' and keys anything: ("a:b", "c") and ("a", "b:c") are different windows
    assert keys.dedupe("a:b", "c") != keys.dedupe("a", "b:c")


# --------------------------------------------------------------------------- memory://


async def test_memory_a_second_publish_within_the_window_writes_nothing_and_returns_the_first_id(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[Any] = []
    hub = counting_hub("memory://", "invoices", seen)
    async with hub.running():
        first = await hub.publish("invoices", 1, dedupe_key="invoice-42", dedupe_for=60)
        await trio.sleep(59)
        assert await hub.publish("invoices", 2, dedupe_key="invoice-42", dedupe_for=60) == first
        await trio.sleep(2)  # the window (from the first publish) has lapsed
        third = await hub.publish("invoices", 3, dedupe_key="invoice-42", dedupe_for=60)
        assert third != first
        assert await hub.publish("invoices", 4, dedupe_key="invoice-42") == third
        await trio.sleep(1)
    assert seen == [1, 3]


async def test_memory_topics_and_keys_are_independent_and_plain_publishes_untouched(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[Any] = []
    hub = counting_hub("memory://", "a", seen)

    @hub.action("b")
    async def other(job: Job) -> None:
        seen.append(("b", job.payload))

    async with hub.running():
        ids = [
            await hub.publish("a", 1, dedupe_key="k"),
            await hub.publish("b", 2, dedupe_key="k"),
            await hub.publish("a", 3, dedupe_key="other"),
            await hub.publish("a", 4),
            await hub.publish("a", 5),
        ]
        assert len(set(ids)) == 5
        await trio.sleep(1)
    assert sorted(seen, key=str) == sorted([1, ("b", 2), 3, 4, 5], key=str)


async def test_memory_a_delayed_publish_holds_its_key_from_publish_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[tuple[Any, float]] = []
    hub = ActionHub("memory://")

    @hub.action("later")
    async def record(job: Job) -> None:
        seen.append((job.payload, trio.current_time()))

    async with hub.running():
        start = trio.current_time()
        first = await hub.publish("later", "delayed", delay=30, dedupe_key="k", dedupe_for=100)
        assert await hub.publish("later", "now", dedupe_key="k", dedupe_for=100) == first
        await trio.sleep(40)
    assert [payload for payload, _ in seen] == ["delayed"]
    assert seen[0][1] - start >= 30


async def test_memory_a_publish_that_fails_does_not_hold_the_key(autojump_clock: trio.abc.Clock) -> None:
    windows = DedupeWindows()
    dedupe = check_dedupe("k", 10)
    assert dedupe is not None
    assert windows.claim("t", dedupe, "id-1", 0.0) is None
    windows.release("t", dedupe, "id-1")  # its publish failed (say, Overloaded)
    assert windows.claim("t", dedupe, "id-2", 1.0) is None
    assert windows.claim("t", dedupe, "id-3", 2.0) == "id-2"
    windows.release("t", dedupe, "id-3")  # not the holder: nothing changes
    assert windows.claim("t", dedupe, "id-4", 3.0) == "id-2"
    assert windows.claim("t", dedupe, "id-5", 11.0) is None  # lapsed


# --------------------------------------------------------------------------- message ids


def test_a_forked_child_never_repeats_its_parents_message_ids() -> None:
    ids = MessageIds()
    parent_first = ids()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the next id of the same object
        os.write(write, ids().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    parent_next = ids()
    producer = parent_first.rpartition("-")[0]
    assert parent_next == f"{producer}-2"
    assert child.rpartition("-")[0] != producer  # else Redis would drop one of the two as a retry


# --------------------------------------------------------------------------- Redis


async def test_redis_ten_processes_publishing_one_key_at_once_write_one_entry(
    redis_server: RedisServer, redis_url: str, r: redis.Redis
) -> None:
    prefix = prefix_of(redis_url)
    lists = f"{prefix}test"
    outputs: list[bytes] = []

    async def run(flavour: str) -> None:
        command = [sys.executable, "-m", "tests.dedupe_publisher", flavour, redis_url, redis_server.url]
        result = await trio.run_process(
            [*command, "invoices", "invoice-42", lists], capture_stdout=True, cwd=ROOT, check=True
        )
        outputs.append(result.stdout)

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(run, "hub" if i % 2 else "client")
            await wait_until(lambda: r.llen(f"{lists}:ready") == 10, timeout=80)
            r.rpush(f"{lists}:go", *range(10))  # all ten released at once
    ids = {output.decode().strip() for output in outputs}
    entries = r.xrange(f"{prefix}invoices")
    assert len(entries) == 1
    assert ids == {orjson.loads(entries[0][1][b"message"])["id"]}


async def test_redis_hub_dedupes_within_the_window_and_not_after(bus_url: str) -> None:
    on = on_redis(bus_url)
    r, keys = on.client, on.keys
    async with ActionHub(bus_url).running() as hub:
        first = await hub.publish("invoices", 1, dedupe_key="invoice-42", dedupe_for=0.3)
        assert await hub.publish("invoices", 2, dedupe_key="invoice-42") == first
        assert await hub.publish("other", 2, dedupe_key="invoice-42") != first  # another topic
        assert r.xlen(keys.stream("invoices")) == 1
        dedupe_key = keys.dedupe("invoices", "invoice-42", target=keys.stream("invoices"))
        assert r.get(dedupe_key) == first.encode()
        await wait_until(lambda: not r.exists(dedupe_key))  # the window lapses on the Redis clock
        later = await hub.publish("invoices", 3, dedupe_key="invoice-42")
        assert later != first
        assert 3500 < r.pttl(dedupe_key) <= 3_600_000  # the default window: an hour
    payloads = [orjson.loads(f[b"message"])["payload"] for _, f in r.xrange(keys.stream("invoices"))]
    assert payloads == [1, 3]
    r.close()


async def test_redis_hub_keyed_and_delayed_publishes_dedupe_on_both_layouts(bus_url: str) -> None:
    """The same dedupe key with the same ordering key is a duplicate in either layout (in the
    cluster layout the dedupe key lives in the partition's slot: design §4); a delayed publish
    holds its key too, and is delivered once."""
    seen: list[Any] = []
    hub = counting_hub(bus_url, "later", seen)
    async with hub.running():
        first = await hub.publish("orders", 1, key="customer-1", dedupe_key="order-7")
        assert await hub.publish("orders", 2, key="customer-1", dedupe_key="order-7") == first
        delayed = await hub.publish("later", "delayed", delay=0.2, dedupe_key="d")
        assert await hub.publish("later", "again", dedupe_key="d") == delayed
        await wait_until(lambda: len(seen) == 1)
    assert seen == ["delayed"]


@pytest.mark.parametrize("flavour", ["blocking", "asyncio", "trio"])
async def test_redis_clients_dedupe_like_the_hub(flavour: str, redis_url: str, r: redis.Redis) -> None:
    prefix = prefix_of(redis_url)
    if flavour == "blocking":
        with Client(redis_url) as client:
            ids = [client.publish("invoices", n, dedupe_key="inv-1", dedupe_for=60) for n in range(3)]
    elif flavour == "trio":
        async with TrioClient(redis_url) as trio_client:
            ids = [
                await trio_client.publish("invoices", n, dedupe_key="inv-1", dedupe_for=60) for n in range(3)
            ]
    else:

        async def asyncio_publishes() -> list[str]:
            async with AsyncClient(redis_url) as async_client:
                return [
                    await async_client.publish("invoices", n, dedupe_key="inv-1", dedupe_for=60)
                    for n in range(3)
                ]

        import asyncio

        ids = await trio.to_thread.run_sync(lambda: asyncio.run(asyncio_publishes()))
    async with ActionHub(redis_url).running() as hub:  # the hub sees the clients' key
        ids.append(await hub.publish("invoices", 9, dedupe_key="inv-1"))
    assert len(set(ids)) == 1
    assert r.xlen(f"{prefix}invoices") == 1


async def test_redis_delayed_publish_holds_its_key_and_is_delivered_once(redis_url: str) -> None:
    seen: list[Any] = []
    hub = counting_hub(redis_url, "later", seen)
    async with hub.running():
        first = await hub.publish("later", "delayed", delay=0.5, dedupe_key="k")
        with Client(redis_url) as client:
            assert client.publish("later", "client", dedupe_key="k") == first
            assert client.publish("later", "client", delay=1, dedupe_key="k") == first
        assert await hub.publish("later", "now", dedupe_key="k") == first
        await wait_until(lambda: seen == ["delayed"])
        other = await hub.publish("later", "other key", dedupe_key="k2")
        await wait_until(lambda: len(seen) == 2)
    assert other != first and seen == ["delayed", "other key"]


async def test_redis_keyed_topic_dedupes_across_partitions(redis_url: str, r: redis.Redis) -> None:
    prefix = prefix_of(redis_url)
    async with ActionHub(redis_url).running() as hub:
        first = await hub.publish("orders", 1, key="customer-1", dedupe_key="order-7")
        # the same dedupe key with another ordering key (another partition) is still a duplicate
        assert await hub.publish("orders", 2, key="customer-2", dedupe_key="order-7") == first
        with Client(redis_url) as client:
            assert client.publish("orders", 3, key="customer-3", dedupe_key="order-7") == first
            second = client.publish("orders", 4, key="customer-1", dedupe_key="order-8")
    partitions = int(r.get(f"{prefix}partitions:orders") or 0)
    lengths = [r.xlen(f"{prefix}orders:p{p}") for p in range(partitions)]
    assert partitions > 0 and sum(lengths) == 2 and second != first


async def test_redis_pubsub_dedupes_too(redis_server: RedisServer, redis_url: str) -> None:
    url = redis_url + "&mode=pubsub"
    subscriber = redis.Redis(port=redis_server.port).pubsub()
    channel = f"{prefix_of(redis_url)}news"
    subscriber.subscribe(channel)
    async with ActionHub(url).running() as hub:
        first = await hub.publish("news", 1, dedupe_key="n")
        with Client(url) as client:
            assert client.publish("news", 2, dedupe_key="n") == first
            client.publish("news", 3)
    got = []
    with trio.fail_after(10):
        while len(got) < 2:
            item = await trio.to_thread.run_sync(lambda: subscriber.get_message(timeout=1))
            if item is not None and item["type"] == "message":
                got.append(orjson.loads(item["data"])["payload"])
    assert got == [1, 3]
    assert await trio.to_thread.run_sync(lambda: subscriber.get_message(timeout=0.2)) is None
    subscriber.close()


# --------------------------------------------------------------------------- lost replies


@pytest.mark.parametrize("path", ["wire", "thread"])
async def test_redis_hub_publish_whose_reply_is_lost_is_retried_and_written_once(
    path: str, redis_server: RedisServer, r: redis.Redis
) -> None:
    proxy = ChaosProxy(redis_server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        # an option the trio-driven connection does not reproduce keeps redis-py's thread path
        option = "&socket_keepalive=true" if path == "thread" else ""
        url = proxy.url(f"/0?prefix=lost-hub-{path}:{option}")
        async with ActionHub(url).running() as hub:
            assert (hub.bus.wire is None) == (path == "thread")  # type: ignore[attr-defined]
            await hub.publish("warm-up", 0)
            proxy.lose_reply_to(b"the-lost-one")
            with trio.fail_after(20):
                message_id = await hub.publish("invoices", "the-lost-one")
            assert proxy.replies_lost == 1  # the script ran, its answer never came: a retry followed
            await hub.publish_many("invoices", ["after"])
        nursery.cancel_scope.cancel()
    entries = r.xrange(f"lost-hub-{path}:invoices")
    assert [orjson.loads(f[b"message"])["id"] for _, f in entries][:1] == [message_id]
    assert len(entries) == 2


async def test_redis_hub_publish_many_whose_reply_is_lost_is_retried_and_written_once(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    proxy = ChaosProxy(redis_server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with ActionHub(proxy.url("/0?prefix=lost-many:")).running() as hub:
            await hub.publish("warm-up", 0)
            proxy.lose_reply_to(b"batch-item-7")
            with trio.fail_after(20):
                ids = await hub.publish_many("invoices", [f"batch-item-{n}" for n in range(10)])
            assert proxy.replies_lost == 1
        nursery.cancel_scope.cancel()
    written = [orjson.loads(f[b"message"])["id"] for _, f in r.xrange("lost-many:invoices")]
    assert written == ids


@pytest.mark.parametrize("many", [False, True], ids=["publish", "publish_many"])
async def test_redis_client_publish_whose_reply_is_lost_is_retried_by_redis_py_and_written_once(
    many: bool, redis_server: RedisServer, r: redis.Redis
) -> None:
    proxy = ChaosProxy(redis_server.port)
    prefix = f"lost-client-{int(many)}:"
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        with Client(proxy.url(f"/0?prefix={prefix}")) as client:
            await trio.to_thread.run_sync(client.publish, "warm-up", 0)
            proxy.lose_reply_to(b"the-lost-one")
            with trio.fail_after(20):
                if many:
                    ids = await trio.to_thread.run_sync(
                        client.publish_many, "invoices", ["the-lost-one", "another"]
                    )
                else:
                    ids = [await trio.to_thread.run_sync(client.publish, "invoices", "the-lost-one")]
            assert proxy.replies_lost == 1
        nursery.cancel_scope.cancel()
    written = [orjson.loads(f[b"message"])["id"] for _, f in r.xrange(f"{prefix}invoices")]
    assert written == ids


@pytest.mark.parametrize("publisher", ["hub", "client"])
async def test_a_resend_whose_first_attempt_never_reached_redis_writes_one_entry(
    publisher: str, redis_server: RedisServer, r: redis.Redis
) -> None:
    """The first attempt is dropped on its way (its connection reset): the resend finds nothing in
    the stream and writes the message, once."""
    proxy = ChaosProxy(redis_server.port)
    prefix = f"dropped-{publisher}:"
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        url = proxy.url(f"/0?prefix={prefix}")
        with trio.fail_after(20):
            if publisher == "hub":
                async with ActionHub(url).running() as hub:
                    await hub.publish("warm-up", 0)
                    proxy.drop_request_to(b"never-sent")
                    ids = [await hub.publish("invoices", "never-sent")]
            else:
                with Client(url) as client:
                    await trio.to_thread.run_sync(client.publish, "warm-up", 0)
                    proxy.drop_request_to(b"never-sent")
                    ids = [await trio.to_thread.run_sync(client.publish, "invoices", "never-sent")]
        assert proxy.requests_dropped == 1 and proxy.replies_lost == 0
        nursery.cancel_scope.cancel()
    written = [orjson.loads(f[b"message"])["id"] for _, f in r.xrange(f"{prefix}invoices")]
    assert written == ids


@pytest.mark.parametrize("publisher", ["hub", "client"])
async def test_a_kept_topics_publish_whose_reply_is_lost_is_written_once_with_its_record(
    publisher: str, redis_server: RedisServer, r: redis.Redis
) -> None:
    """A topic that keeps results publishes through the script from the first attempt; its resend
    finds the pending record (and the entry) the first attempt wrote, and writes nothing."""
    proxy = ChaosProxy(redis_server.port)
    prefix = f"lost-kept-{publisher}:"
    keys = Keys(prefix)
    r.set(keys.keeps_results("invoices"), 60)  # a group of the topic keeps results
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        url = proxy.url(f"/0?prefix={prefix}")
        with trio.fail_after(20):
            if publisher == "hub":
                async with ActionHub(url).running() as hub:
                    await hub.publish("invoices", "warm-up")  # learns that the topic keeps results
                    proxy.lose_reply_to(b"the-lost-one")
                    message_id = await hub.publish("invoices", "the-lost-one")
            else:
                with Client(url) as client:
                    await trio.to_thread.run_sync(client.publish, "invoices", "warm-up")
                    proxy.lose_reply_to(b"the-lost-one")
                    message_id = await trio.to_thread.run_sync(client.publish, "invoices", "the-lost-one")
        assert proxy.replies_lost == 1
        nursery.cancel_scope.cancel()
    payloads = [orjson.loads(f[b"message"])["payload"] for _, f in r.xrange(f"{prefix}invoices")]
    assert payloads == ["warm-up", "the-lost-one"]
    assert orjson.loads(r.get(keys.status(message_id)) or b"null")["state"] == "pending"


async def test_an_asyncio_client_publish_whose_reply_is_lost_is_resent_and_written_once(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    import asyncio

    proxy = ChaosProxy(redis_server.port)
    prefix = "lost-asyncio:"

    async def publish(url: str) -> str:
        async with AsyncClient(url) as client:
            await client.publish("warm-up", 0)
            proxy.lose_reply_to(b"the-lost-one")
            return await client.publish("invoices", "the-lost-one")

    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        url = proxy.url(f"/0?prefix={prefix}")
        with trio.fail_after(20):
            message_id = await trio.to_thread.run_sync(lambda: asyncio.run(publish(url)))
        assert proxy.replies_lost == 1
        nursery.cancel_scope.cancel()
    written = [orjson.loads(f[b"message"])["id"] for _, f in r.xrange(f"{prefix}invoices")]
    assert written == [message_id]


def test_a_publisher_reads_whether_a_topic_keeps_results_again_only_after_the_interval() -> None:
    now = [100.0]
    kept = KeptTopics(clock=lambda: now[0])
    assert kept.kept("t") is None  # unknown: read it
    assert kept.learn("t", False) is False
    now[0] += KEPT_RECHECK - 0.1
    assert kept.kept("t") is False  # trusted: a plain publish stays a bare XADD
    now[0] += 0.1
    assert kept.kept("t") is None  # stale: read again
    kept.learn("t", True)
    assert kept.kept("t") is True and kept.kept("other") is None


async def test_a_clients_plain_pubsub_publish_is_not_resent(redis_server: RedisServer) -> None:
    """Pub/sub keeps nothing a resend could look for: a client's plain publish whose connection
    breaks fails (`BusError`) and is not sent again: at most once."""
    proxy = ChaosProxy(redis_server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        with Client(proxy.url("/0?prefix=pubsub-once:&mode=pubsub")) as client:
            await trio.to_thread.run_sync(client.publish, "news", "warm-up")
            proxy.drop_request_to(b"dropped")
            with trio.fail_after(20), pytest.raises(BusError):  # a resend would have gone through
                await trio.to_thread.run_sync(client.publish, "news", "dropped")
            await trio.to_thread.run_sync(client.publish, "news", "after")  # the client goes on
        assert proxy.requests_dropped == 1
        nursery.cancel_scope.cancel()


async def test_the_trim_never_removes_entries_younger_than_any_resend_looks_back(
    redis_url: str, r: redis.Redis
) -> None:
    """Entries every group has acked are trimmed, but not those younger than publish_timeout +
    10 s: a resend looks for its first attempt's entry among them."""
    prefix = prefix_of(redis_url)
    stream = f"{prefix}trimmed"
    now_ms = int(r.time()[0]) * 1000
    old = [r.xadd(stream, {"message": b"{}"}, id=f"{now_ms - 60_000}-{n}") for n in range(300)]
    young = [r.xadd(stream, {"message": b"{}"}, id=f"{now_ms - 5_000}-{n}") for n in range(300)]
    r.xgroup_create(stream, "g", id="0")
    r.xreadgroup("g", "c", {stream: ">"}, count=1000)
    r.xack(stream, "g", *old, *young)  # the group needs nothing any more
    async with ActionHub(redis_url + "&publish_timeout=20").running() as hub:  # guard: 30 s
        removed = await hub.bus.trim([stream])  # type: ignore[attr-defined]
    remaining = [entry_id for entry_id, _ in r.xrange(stream)]
    assert removed >= 200  # XTRIM MINID ~ trims whole nodes (of 100 entries) of the old ones
    assert set(young) <= set(remaining)
    assert len(remaining) == 600 - removed


# --------------------------------------------------------------------------- the CLI


async def cli(*args: str) -> trio.CompletedProcess[bytes]:
    """``actionhub ARGS`` from this tree's package (the console script would import the installed one)."""
    command = [sys.executable, "-c", "import sys; from actionhub.cli import main; sys.exit(main())", *args]
    return await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT)


async def test_cli_publish_dedupe_key(redis_url: str, r: redis.Redis) -> None:
    first = await cli("publish", "invoices", "1", "--bus", redis_url, "--dedupe-key", "inv-1")
    second = await cli(
        "publish", "invoices", "2", "--bus", redis_url, "--dedupe-key", "inv-1", "--dedupe-for", "60"
    )
    assert first.returncode == second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    assert r.xlen(f"{prefix_of(redis_url)}invoices") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dedupe-for", "60"], "dedupe_for needs a dedupe_key"),
        (["--dedupe-key", "k", "--dedupe-for", "0"], "must be > 0"),
        (["--dedupe-key", "k", "--wait-reply", "5"], "--dedupe-key cannot go with --wait-reply"),
    ],
)
async def test_cli_dedupe_misuse_is_one_line_and_exit_2(
    args: list[str], message: str, redis_url: str
) -> None:
    result = await cli("publish", "invoices", "1", "--bus", redis_url, *args)
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr


async def test_publishes_still_write_the_pending_status_record_of_a_topic_that_keeps_results(
    redis_url: str, r: redis.Redis
) -> None:
    keys = Keys(prefix_of(redis_url))
    r.set(keys.keeps_results("invoices"), 60)  # a group of the topic keeps results (issue 19, part 4)
    async with ActionHub(redis_url).running() as hub:
        ids = [
            await hub.publish("invoices", 1),
            await hub.publish("invoices", 2, delay=30, dedupe_key="k"),
            *await hub.publish_many("invoices", [3, 4]),
        ]
        duplicate_of = await hub.publish("invoices", 5, dedupe_key="k")
        untracked = await hub.publish("other", 6)
    with Client(redis_url) as client:
        ids.append(client.publish("invoices", 7))
    assert duplicate_of == ids[1]
    for message_id in ids:
        record = orjson.loads(r.get(keys.status(message_id)) or b"null")
        assert record["state"] == "pending" and record["topic"] == "invoices"
        assert 86_400 < r.ttl(keys.status(message_id)) <= 86_460
    assert not r.exists(keys.status(untracked))
