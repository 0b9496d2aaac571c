"""`Client`, `AsyncClient` and `TrioClient` against a live hub on a real Redis: every method,
each flavour the same way, on both key layouts (`bus_url`: a single node and a cluster). The
blocking client runs in worker threads, the asyncio one on an event loop of its own in a thread,
the trio one in the test's own loop."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import trio

from actionhub import ActionHub, BusError, ConfigurationError, Job
from actionhub.client import AsyncClient, Client, TrioClient
from actionhub.testing import RedisServer
from tests.layouts import on_redis
from tests.polling import wait_until
from tests.servers import free_port, tls_redis

FLAVOURS = ["blocking", "asyncio", "trio"]


class AsyncioThread:
    """An asyncio event loop in a thread of its own, for the asyncio client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Flavour:
    """One client flavour behind one awaitable interface: ``await flavour.call("publish", ...)``."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.asyncio: AsyncioThread | None = None
        if name == "blocking":
            self.client: Any = Client(url)
        elif name == "asyncio":
            self.asyncio = AsyncioThread()
            self.client = self.asyncio.run(_make_async_client(url))
        else:
            self.client = TrioClient(url)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.client, method)
        if self.name == "trio":
            return await bound(*args, **kwargs)
        if self.asyncio is not None:
            return await trio.to_thread.run_sync(self.asyncio.run, bound(*args, **kwargs))
        return await trio.to_thread.run_sync(partial(bound, *args, **kwargs))

    async def close(self) -> None:
        if self.name == "trio":
            await self.client.aclose()
        elif self.asyncio is not None:
            await trio.to_thread.run_sync(self.asyncio.run, self.client.aclose())
            self.asyncio.close()
        else:
            self.client.close()


async def _make_async_client(url: str) -> AsyncClient:
    return AsyncClient(url)


class Shop:
    """The hub's side: what its actions saw."""

    def __init__(self) -> None:
        self.seen: list[Job] = []
        self.ordered: dict[str, list[int]] = {}


@asynccontextmanager
async def served(url: str) -> AsyncIterator[tuple[ActionHub, Shop]]:
    hub = ActionHub(url, name="served", announce_interval=0.5)
    shop = Shop()

    @hub.action("record", max_workers=4)
    async def record(job: Job) -> None:
        shop.seen.append(job)

    @hub.action("echo")
    async def echo(job: Job) -> None:
        await job.reply({"echo": job.payload})

    @hub.action("orders", ordered=True, partitions=4, max_workers=4)
    async def orders(job: Job) -> None:
        shop.ordered.setdefault(job.key or "", []).append(job.payload)

    @hub.action("fail", max_attempts=1)
    async def fail(job: Job) -> None:
        raise ValueError(f"cannot handle {job.payload}")

    async with hub.running():
        yield hub, shop


@pytest.fixture(params=FLAVOURS)
async def flavour(request: pytest.FixtureRequest, bus_url: str) -> AsyncIterator[Flavour]:
    client = Flavour(request.param, f"{bus_url}&block=0.2")
    yield client
    await client.close()


async def test_publish_and_publish_many_reach_the_hub(flavour: Flavour, bus_url: str) -> None:
    async with served(bus_url) as (_, shop):
        one = await flavour.call("publish", "record", {"n": 0}, headers={"from": flavour.name})
        many = await flavour.call("publish_many", "record", [{"n": n} for n in range(1, 6)])
        await wait_until(lambda: len(shop.seen) == 6)
    assert sorted(job.payload["n"] for job in shop.seen) == list(range(6))
    assert [job.message.id for job in shop.seen if job.payload["n"] == 0] == [one]
    assert {job.message.id for job in shop.seen if job.payload["n"] > 0} == set(many)
    assert next(job for job in shop.seen if job.payload["n"] == 0).headers == {"from": flavour.name}


async def test_a_delayed_message_arrives_after_its_delay(flavour: Flavour, bus_url: str) -> None:
    async with served(bus_url) as (_, shop):
        sent = trio.current_time()
        await flavour.call("publish", "record", "later", delay=1.0)
        await wait_until(lambda: bool(shop.seen), timeout=10)
        arrived = trio.current_time()
    assert arrived - sent >= 0.95  # the delayed set is scored by the Redis clock


async def test_keyed_messages_go_to_the_partition_the_hub_computes_and_keep_their_order(
    flavour: Flavour, bus_url: str
) -> None:
    bus = on_redis(bus_url)
    async with served(bus_url) as (_, shop):
        for seq in range(10):
            await flavour.call("publish_many", "orders", [seq] * 3, keys=["a", "b", "c"])
        await flavour.call("publish", "orders", 10, key="a")
        await wait_until(lambda: sum(len(s) for s in shop.ordered.values()) == 31)
    assert shop.ordered == {"a": list(range(11)), "b": list(range(10)), "c": list(range(10))}
    # every message of "a" is in the partition stream the hub computes for "a"
    entries = bus.client.xrange(bus.keys.keyed_stream("orders", "a", 4))
    assert sum(orjson.loads(fields[b"message"]).get("key") == "a" for _, fields in entries) == 11
    bus.client.close()


async def test_request_gets_the_reply_and_times_out_without_one(flavour: Flavour, bus_url: str) -> None:
    async with served(bus_url):
        answer = await flavour.call("request", "echo", {"x": 1}, timeout=10)
        assert answer.payload == {"echo": {"x": 1}}
        started = trio.current_time()
        with pytest.raises(TimeoutError, match=r"no reply from 'nobody' within 0\.5s"):
            await flavour.call("request", "nobody", 1, timeout=0.5)
        assert trio.current_time() - started >= 0.5


async def test_dead_letters_list_requeue_and_purge(flavour: Flavour, bus_url: str) -> None:
    async with served(bus_url):
        await flavour.call("publish", "fail", "poison")

        async def letters() -> list[Any]:
            found: list[Any] = await flavour.call("dead_letters", "fail")
            return found

        found: list[Any] = []

        async def one_letter() -> bool:
            nonlocal found
            found = await letters()
            return len(found) == 1

        await wait_until_async(one_letter)
        (letter,) = found
        assert letter.message.payload == "poison" and "cannot handle poison" in (letter.error or "")
        assert await flavour.call("requeue_dead_letters", "fail") == 1
        await wait_until_async(one_letter)  # it failed again: back in the dead letters, once
        assert found[0].id != letter.id and found[0].attempts == 1
        assert await flavour.call("purge_dead_letters", "fail", [found[0].id]) == 1
        assert await letters() == []


async def test_hubs_and_commands(flavour: Flavour, bus_url: str) -> None:
    async with served(bus_url) as (hub, _):

        async def announced() -> bool:
            return [s.hub for s in await flavour.call("hubs")] == ["served"]

        await wait_until_async(announced)
        (snapshot,) = await flavour.call("hubs")
        assert {stat.addr for stat in snapshot.groups} == {"record", "echo", "orders", "fail"}
        answers = await flavour.call("command", "scale", "record", min_workers=2, max_workers=3)
        assert [(a.hub, a.outcome) for a in answers] == [("served", "applied")]
        assert hub.group("record").config.max_workers == 3
        (answer,) = await flavour.call("command", "pause", "nope")
        assert answer.outcome == "absent"
        with pytest.raises(ConfigurationError, match="unknown command"):
            await flavour.call("command", "explode", "record")


async def test_bad_input_is_refused_before_anything_is_written(flavour: Flavour, bus_url: str) -> None:
    client = on_redis(bus_url).client
    before = client.dbsize()
    with pytest.raises(ConfigurationError, match="invalid topic"):
        await flavour.call("publish", "bad topic", 1)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await flavour.call("publish", "record", {"when": object()})
    with pytest.raises(ValueError, match="over the limit"):
        await flavour.call("publish", "record", "x" * (2 << 20))
    with pytest.raises(ConfigurationError, match="key must be"):
        await flavour.call("publish_many", "orders", [1, 2], keys=["a", ""])
    assert client.dbsize() == before
    client.close()


@pytest.mark.parametrize("name", FLAVOURS)
async def test_an_unreachable_or_refusing_redis_is_one_clear_error(
    name: str, redis_server: RedisServer
) -> None:
    unreachable = Flavour(name, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        with pytest.raises(BusError, match="redis unreachable for publish"):
            await unreachable.call("publish", "record", 1)
    finally:
        await unreachable.close()
    admin = redis.Redis(port=redis_server.port)
    user = f"nobody{uuid.uuid4().hex[:6]}"
    admin.acl_setuser(user, enabled=True, passwords=["+secret"], commands=["+ping"], keys=["*"])
    try:
        refused = Flavour(name, f"redis://{user}:secret@127.0.0.1:{redis_server.port}/0")
        try:
            with pytest.raises(BusError, match="redis refused publish") as raised:
                await refused.call("publish", "record", 1)
            assert "secret" not in str(raised.value)
        finally:
            await refused.close()
    finally:
        admin.acl_deluser(user)


async def test_a_blocking_client_from_20_threads_loses_and_doubles_nothing(redis_url: str) -> None:
    async with served(redis_url) as (_, shop):
        with Client(redis_url) as client:

            def publish_50(thread: int) -> list[str]:
                return [client.publish("record", [thread, n]) for n in range(50)]

            def run_all() -> list[list[str]]:
                with ThreadPoolExecutor(20) as pool:
                    return list(pool.map(publish_50, range(20)))

            ids = [i for batch in await trio.to_thread.run_sync(run_all) for i in batch]
        await wait_until(lambda: len(shop.seen) >= 1000, timeout=30)
    assert len(set(ids)) == 1000
    assert sorted(job.message.id for job in shop.seen) == sorted(ids)  # each once


async def test_an_asyncio_client_from_200_tasks_loses_and_doubles_nothing(redis_url: str) -> None:
    async def publish_from_200_tasks() -> list[str]:
        async with AsyncClient(redis_url) as client:
            batches = await asyncio.gather(
                *(asyncio.gather(*(client.publish("record", [t, n]) for n in range(5))) for t in range(200))
            )
        return [i for batch in batches for i in batch]

    async with served(redis_url) as (_, shop):
        ids = await trio.to_thread.run_sync(asyncio.run, publish_from_200_tasks())
        await wait_until(lambda: len(shop.seen) >= 1000, timeout=30)
    assert len(set(ids)) == 1000
    assert sorted(job.message.id for job in shop.seen) == sorted(ids)


# --------------------------------------------------------------------------- helpers


async def wait_until_async(check: Callable[[], Coroutine[Any, Any, bool]], timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - the state lives in Redis and the hub
            await trio.sleep(0.1)


@pytest.mark.parametrize("url", ["memory://", "ftp://example.com", "redis://localhost/0?nonsense=1"])
def test_a_url_no_client_can_use_is_refused_at_once(url: str) -> None:
    for flavour in (Client, AsyncClient, TrioClient):
        with pytest.raises(ConfigurationError):
            flavour(url)


@pytest.mark.parametrize("name", FLAVOURS)
async def test_the_clients_take_unix_sockets_and_tls_like_the_hubs(name: str, tmp_path: Path) -> None:
    server, ca_file = tls_redis(tmp_path)
    await trio.to_thread.run_sync(server.start)
    try:
        for url in (
            f"unix://{server.unix_socket}?db=0&prefix=u:",
            f"rediss://127.0.0.1:{server.tls_port}/0?ssl_ca_certs={ca_file}&prefix=t:",
        ):
            async with served(url):
                client = Flavour(name, url)
                try:
                    answer = await client.call("request", "echo", url[:5], timeout=10)
                finally:
                    await client.close()
            assert answer.payload == {"echo": url[:5]}
    finally:
        await trio.to_thread.run_sync(server.close)
