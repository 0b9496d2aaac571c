"""A hub's cost does not grow with its groups: 1,000 bound actions or 1,000 lazy templates on a
real Redis hold a few connections, and lazy templates hold nothing until their first message.
Everything here is counted (connections, tasks, groups, Redis calls), never timed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import trio

from actionhub import ActionHub, Job, WorkerTemplateRegistry
from actionhub.testing import RedisServer
from tests.polling import wait_until
from tests.servers import private_redis

ACTIONS = 1000
#: what the issue promises per hub whatever the number of actions
MAX_CONNECTIONS = 8
#: trio tasks of a hub that serves nothing yet: the bus's, the hub's, the test's own
MAX_IDLE_TASKS = 40


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis of this test's own: every connection but the test's is the hub's."""
    with private_redis() as server:
        yield server


@pytest.fixture
def observer(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=server.port, client_name="observer")
    yield client
    client.close()


def hub_connections(observer: redis.Redis) -> int:
    return sum(1 for c in observer.client_list() if c.get("name") != "observer")


def calls(observer: redis.Redis, command: str) -> int:
    stats = observer.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def tasks() -> int:
    """Every trio task alive in this run."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    return count(trio.lowlevel.current_root_task())


def publish_to(observer: redis.Redis, topics: list[str]) -> None:
    with observer.pipeline(transaction=False) as pipe:
        for n, topic in enumerate(topics):
            pipe.xadd(f"actionhub:{topic}", {"message": b'{"payload": %d}' % n})
        pipe.execute()


async def test_a_hub_with_1000_actions_runs_every_topic_on_a_few_connections(
    server: RedisServer, observer: redis.Redis
) -> None:
    hub = ActionHub(server.url)
    ran: set[int] = set()

    async def action(job: Job) -> None:
        assert isinstance(job.payload, int)
        ran.add(job.payload)

    topics = [f"many.{n}" for n in range(ACTIONS)]
    for topic in topics:
        hub.bind(topic, action, max_workers=10)
    async with hub.running():
        assert len(hub.stats()) == ACTIONS
        assert hub_connections(observer) <= MAX_CONNECTIONS
        publish_to(observer, topics)
        await wait_until(lambda: len(ran) == ACTIONS)
        assert hub_connections(observer) <= MAX_CONNECTIONS

        # idle: one blocking XREAD at a time over every stream, not a read per group
        xread, xreadgroup = calls(observer, "xread"), calls(observer, "xreadgroup")
        await wait_until(lambda: calls(observer, "xread") >= xread + 3)
        assert calls(observer, "xreadgroup") - xreadgroup < 10
        # and one message more still runs after all that idling
        publish_to(observer, topics[-1:])
        await wait_until(lambda: sum(s.total_message_processed for s in hub.stats()) == ACTIONS + 1)
        assert hub_connections(observer) <= MAX_CONNECTIONS


async def test_1000_lazy_templates_hold_nothing_until_their_first_message(
    server: RedisServer, observer: redis.Redis
) -> None:
    registry = WorkerTemplateRegistry()
    ran: list[object] = []

    async def action(job: Job) -> None:
        ran.append(job.payload)

    for n in range(ACTIONS):
        registry.action(f"lazy.{n}", max_workers=10)(action)
    hub = ActionHub(server.url, registry=registry)
    async with hub.running():
        assert hub.stats() == []  # no group
        assert tasks() < MAX_IDLE_TASKS  # no task per template
        assert hub_connections(observer) <= MAX_CONNECTIONS  # no connection per template
        xread = calls(observer, "xread")
        await wait_until(lambda: calls(observer, "xread") >= xread + 2)  # it waits, and reads nothing
        assert hub.stats() == []

        publish_to(observer, ["lazy.500"])
        await wait_until(lambda: ran == [0])
        (stat,) = hub.stats()
        assert stat.addr == "lazy.500" and stat.total_message_processed == 1
        assert hub_connections(observer) <= MAX_CONNECTIONS


async def test_a_lazy_template_starts_on_what_was_published_before_the_hub(
    server: RedisServer, observer: redis.Redis
) -> None:
    registry = WorkerTemplateRegistry()
    ran: list[object] = []

    @registry.action("backlog")
    async def backlog(job: Job) -> None:
        ran.append(job.payload)

    first = ActionHub(server.url, registry=registry)
    async with first.running():  # creates the template's consumer group, runs nothing
        pass
    publish_to(observer, ["backlog"])
    hub = ActionHub(server.url, registry=registry)
    async with hub.running():
        await wait_until(lambda: ran == [0])


async def test_a_lazy_template_of_a_keyed_topic_starts_on_its_first_keyed_message(
    server: RedisServer,
) -> None:
    registry = WorkerTemplateRegistry()
    ran: list[object] = []

    @registry.action("keyed")
    async def keyed(job: Job) -> None:
        ran.append((job.key, job.payload))

    hub = ActionHub(server.url, registry=registry)
    async with hub.running():
        assert hub.stats() == []
        await hub.publish("keyed", 1, key="k")  # the topic's partition streams appear now
        await wait_until(lambda: ran == [("k", 1)])


async def test_a_busy_group_and_quiet_ones_leave_nothing_pending_on_the_doorbell(
    server: RedisServer, observer: redis.Redis
) -> None:
    """One busy action is read by its own blocking XREADGROUP; the others, waking meanwhile,
    cut it short by ringing the doorbell, whose rings are acked as they are read."""
    hub = ActionHub(server.url)
    ran: list[tuple[str, object]] = []

    def action(name: str) -> Any:
        async def run(job: Job) -> None:
            ran.append((name, job.payload))

        return run

    for name in ("busy", "quiet.1", "quiet.2"):
        hub.bind(name, action(name))
    async with hub.running():
        for n in range(30):
            await hub.publish("busy", n)
            if n % 10 == 9:  # a quiet topic wakes while the busy one is being read for
                await wait_until(lambda n=n: ("busy", n) in ran)
                await hub.publish(f"quiet.{n // 10 % 2 + 1}", n)
        await wait_until(lambda: len(ran) == 33)
        doorbells = [key.decode() for key in observer.scan_iter("actionhub:doorbell:*")]
        for doorbell in doorbells:
            if observer.type(doorbell) == b"stream":
                for group in observer.xinfo_groups(doorbell):
                    assert group["pending"] == 0, (doorbell, group)
    assert sorted(p for name, p in ran if name == "busy") == list(range(30))


async def test_a_user_without_xread_still_gets_every_message_by_polling(
    server: RedisServer, observer: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    observer.execute_command("ACL", "SETUSER", "noxread", "on", ">pw", "~*", "&*", "+@all", "-xread")
    hub = ActionHub(f"redis://noxread:pw@127.0.0.1:{server.port}/0?block=0.2")
    ran: list[object] = []

    @hub.action("polled")
    async def polled(job: Job) -> None:
        ran.append(job.payload)

    async with hub.running():
        for n in range(3):
            await hub.publish("polled", n)
            await wait_until(lambda n=n: n in ran)
    refused = [r for r in caplog.records if "refused XREAD" in r.getMessage()]
    assert len(refused) == 1  # said once, not once a poll
