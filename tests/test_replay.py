"""start="earliest"/"latest" and `actionhub replay`: a topic's retained history, then live."""

from __future__ import annotations

import orjson
import pytest
import redis
import trio

from actionhub import ActionHub, ConfigurationError, Job
from actionhub.testing import EscalationLog
from tests.polling import wait_until
from tests.test_cli import cli


async def publish(url: str, topic: str, payloads: list[object]) -> list[str]:
    async with ActionHub(url, name="publisher").running() as hub:
        return [await hub.publish(topic, payload) for payload in payloads]


async def test_earliest_sees_history_then_live_latest_only_new_ones(bus_url: str) -> None:
    redis_url = bus_url
    seen: dict[str, list[object]] = {"first": [], "latest": [], "earliest": []}
    first = ActionHub(redis_url, name="first")

    @first.action("first", topic="events")
    async def consume(job: Job) -> None:
        seen["first"].append(job.payload)

    async with first.running():  # the topic has a reader: what follows is its history
        await publish(redis_url, "events", ["h1", "h2", "h3"])
        await wait_until(lambda: len(seen["first"]) == 3)
        later = ActionHub(redis_url, name="later")
        for group, start in (("latest", "latest"), ("earliest", "earliest")):

            async def record(job: Job, group: str = group) -> None:
                seen[group].append(job.payload)

            later.bind(group, record, topic="events", start=start)
        async with later.running():
            await publish(redis_url, "events", ["live"])
            with trio.fail_after(20):
                await wait_until(lambda: seen["earliest"][-1:] == ["live"] and seen["latest"] == ["live"])
    assert seen["earliest"] == ["h1", "h2", "h3", "live"]
    assert seen["latest"] == ["live"]  # a new group on a topic others read starts at its end


async def test_a_topic_nobody_reads_yet_keeps_its_messages_for_the_first_group(bus_url: str) -> None:
    redis_url = bus_url
    await publish(redis_url, "orders", [1, 2])  # no group exists: they wait for their first reader
    seen: list[object] = []
    hub = ActionHub(redis_url)

    @hub.action("orders")  # start="latest", the default
    async def orders(job: Job) -> None:
        seen.append(job.payload)

    async with hub.running():
        with trio.fail_after(20):
            await wait_until(lambda: len(seen) == 2)


async def test_earliest_needs_a_bus_with_history(escalations: EscalationLog) -> None:
    hub = ActionHub(on_escalation=escalations)
    hub.bind("x", _noop, start="earliest")  # the bus may still change (configure): checked at start
    async with hub.running():
        pass
    (escalation,) = escalations
    assert escalation.reason == "start_failure"
    assert "start='earliest' needs a bus that keeps history; memory:// keeps none" in str(escalation.error)
    with pytest.raises(ConfigurationError, match="start must be 'latest' or 'earliest'"):
        ActionHub().bind("y", _noop, start="beginning")


async def _noop(job: Job) -> None:
    pass


async def test_replay_prints_a_range_or_publishes_it_into_another_topic(redis_url: str) -> None:
    ids = await publish(redis_url, "audit", [{"n": n} for n in range(5)])
    assert len(ids) == 5
    lines = (await cli("replay", "audit", "--bus", redis_url)).stdout.decode().splitlines()
    entries = [orjson.loads(line) for line in lines]
    assert [entry["message"]["payload"] for entry in entries] == [{"n": n} for n in range(5)]
    entry_ids = [entry["id"] for entry in entries]

    middle = await cli("replay", "audit", "--from", entry_ids[1], "--to", entry_ids[3], "--bus", redis_url)
    assert [orjson.loads(line)["id"] for line in middle.stdout.decode().splitlines()] == entry_ids[1:4]
    limited = await cli("replay", "audit", "--limit", "2", "--bus", redis_url)
    assert len(limited.stdout.decode().splitlines()) == 2

    seen: list[Job] = []
    hub = ActionHub(redis_url)

    @hub.action("rebuild", start="earliest")
    async def rebuild(job: Job) -> None:
        seen.append(job)

    async with hub.running():
        result = await cli("replay", "audit", "--from", entry_ids[2], "--into", "rebuild", "--bus", redis_url)
        assert result.stdout.decode().strip() == "replayed 3 message(s) of audit into rebuild"
        with trio.fail_after(20):
            await wait_until(lambda: len(seen) == 3)
    assert [job.payload for job in seen] == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert [job.headers["replayed_from"] for job in seen] == [f"audit/{i}" for i in entry_ids[2:]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "audit", "--bus", "memory://"], "memory:// keeps no history of 'audit'"),
        (["replay", "a b"], "invalid topic 'a b'"),
        (["replay", "audit", "--limit", "0"], "--limit must be at least 1"),
    ],
)
async def test_replay_misuse_is_one_line(args: list[str], message: str) -> None:
    result = await cli(*args, check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.count("\n") == 1 and message in stderr


async def test_a_group_that_vanished_is_recreated_from_the_start_so_nothing_is_skipped(
    redis_url: str,
) -> None:
    prefix = redis_url.split("prefix=")[1]
    client = redis.Redis.from_url(redis_url.split("?")[0])
    seen: list[object] = []
    hub = ActionHub(redis_url + "&block=0.2")

    @hub.action("g", topic="jobs")
    async def g(job: Job) -> None:
        seen.append(job.payload)

    async with hub.running():
        client.xgroup_create(f"{prefix}jobs", "another-group", id="$", mkstream=True)
        await publish(redis_url, "jobs", ["before"])
        with trio.fail_after(20):
            await wait_until(lambda: seen == ["before"])
            with client.pipeline(transaction=True) as pipe:  # gone, and a message comes: at once
                pipe.xgroup_destroy(f"{prefix}jobs", "g")  # say, an operator's mistake
                pipe.xadd(f"{prefix}jobs", {"message": orjson.dumps({"payload": "after"})})
                pipe.execute()
            await wait_until(lambda: "after" in seen)
    assert seen.count("before") >= 1  # run again (at-least-once) rather than "after" skipped
