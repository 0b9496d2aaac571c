"""The Redis pub/sub transport (``?mode=pubsub``): fan-out to every hub, at-most-once."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import trio

from actionhub import ActionHub, Job
from actionhub.testing import RedisServer
from tests.polling import wait_until


@pytest.fixture
def pubsub_url(redis_url: str) -> str:
    return redis_url + "&mode=pubsub&block=0.2"


@pytest.fixture
def either_pubsub_url(bus_url: str) -> str:
    """Pub/sub on a single node, and on a cluster (classic PUBLISH/SUBSCRIBE)."""
    return bus_url + "&mode=pubsub&block=0.2"


async def test_two_hubs_both_receive_each_message(either_pubsub_url: str) -> None:
    pubsub_url = either_pubsub_url
    received: dict[str, list[object]] = {"a": [], "b": []}
    hubs = []
    for name in received:
        hub = ActionHub(pubsub_url, name=name)

        @hub.action("news")
        async def news(job: Job, name: str = name) -> None:
            received[name].append(job.payload)

        hubs.append(hub)
    publisher = ActionHub(pubsub_url, name="publisher")

    async with hubs[0].running(), hubs[1].running(), publisher.running():
        for i in range(50):
            await publisher.publish("news", i)
        await wait_until(lambda: all(len(got) == 50 for got in received.values()))
    assert sorted(received["a"]) == sorted(received["b"]) == list(range(50))  # type: ignore[type-var]


async def test_what_does_not_fit_is_dropped_and_counted(pubsub_url: str) -> None:
    release = trio.Event()
    hub = ActionHub(pubsub_url)

    @hub.action("slow", max_workers=1, buffer=5)
    async def slow(job: Job) -> None:
        await release.wait()

    async with hub.running():
        for i in range(30):
            await hub.publish("slow", i)
        await wait_until(lambda: hub.stats()[0].total_dropped + hub.stats()[0].total_message_received == 30)
        stat = hub.stats()[0]
        release.set()
    assert stat.total_message_received == 1 + 5  # one running, five buffered
    assert stat.total_dropped == 24


async def test_malformed_pubsub_messages_are_dead_lettered(
    redis_server: RedisServer, pubsub_url: str
) -> None:
    prefix = parse_qs(urlsplit(pubsub_url).query)["prefix"][0]
    hub = ActionHub(pubsub_url)
    good: list[object] = []

    @hub.action("inbox")
    async def inbox(job: Job) -> None:
        good.append(job.payload)

    client = redis.Redis(port=redis_server.port)
    async with hub.running():
        client.publish(f"{prefix}inbox", b"\xff not json")
        client.publish(f"{prefix}inbox", b'{"no": "payload"}')
        client.publish(f"{prefix}inbox", b'{"payload": 3}')
        await wait_until(lambda: good == [3])
        await wait_until(lambda: hub.stats()[0].total_malformed == 2)
        letters = await hub.dead_letters("inbox")
    assert [letter.reason.split(":")[0] for letter in letters] == ["malformed", "malformed"]
    assert "not JSON" in letters[0].reason and "no 'payload'" in letters[1].reason


async def test_request_reply_over_pubsub(either_pubsub_url: str) -> None:
    hub = ActionHub(either_pubsub_url)

    @hub.action("echo")
    async def echo(job: Job) -> None:
        await job.reply(job.payload)

    async with hub.running():
        assert (await hub.request("echo", {"x": 1}, timeout=10)).payload == {"x": 1}


async def test_a_delayed_pubsub_message_is_published_once(either_pubsub_url: str) -> None:
    got: list[object] = []
    hub = ActionHub(either_pubsub_url)
    other = ActionHub(either_pubsub_url, name="other")  # moves due messages too: still once

    @hub.action("later")
    async def later(job: Job) -> None:
        got.append(job.payload)

    async with hub.running(), other.running():
        await hub.publish("later", "soon", delay=0.3)
        await wait_until(lambda: got == ["soon"])
        info = await hub.bus.topic_info("later")
    assert info.delayed == 0


async def test_subscriptions_survive_a_redis_restart(redis_server: RedisServer, pubsub_url: str) -> None:
    got: list[object] = []
    hub = ActionHub(pubsub_url)

    @hub.action("news")
    async def news(job: Job) -> None:
        got.append(job.payload)

    async with hub.running():
        await hub.publish("news", "before")
        await wait_until(lambda: got == ["before"])
        await trio.to_thread.run_sync(redis_server.restart)

        async def resubscribed() -> bool:
            await hub.publish("news", "after")  # at-most-once: sent again until the hub is back
            return "after" in got

        with trio.fail_after(20):
            while not await resubscribed():  # noqa: ASYNC110 - the state is in Redis
                await trio.sleep(0.1)
    assert got[0] == "before" and "after" in got
