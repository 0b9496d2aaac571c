"""Per-key ordering: lanes inside a group, partitions and leases across hubs on Redis."""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
import redis
import trio

from actionhub import ActionHub, Behaviour, ConfigurationError, Job, MemoryBus, Reject, Retry
from actionhub.bus.redis.common import RedisBusBase
from actionhub.bus.redis.keys import partition_of
from actionhub.bus.redis.layout import ClusterKeys
from actionhub.bus.redis.ordered import assign
from actionhub.message import MalformedMessage, decode
from actionhub.testing import EscalationLog, RedisServer
from tests.layouts import client_of, keys_of
from tests.polling import wait_until


class Runs:
    """What an ordered action saw: per key, the sequence numbers in the order they started, and
    whether a key ever ran twice at once or keys ever overlapped."""

    def __init__(self) -> None:
        self.order: dict[str, list[int]] = defaultdict(list)
        self.running: set[str] = set()
        self.same_key_at_once = 0
        self.most_keys_at_once = 0
        self.count = 0
        self.all_done = trio.Event()
        self.expected = 0

    async def run(self, job: Job, work: float) -> None:
        key = job.key
        assert key is not None
        if key in self.running:
            self.same_key_at_once += 1
        self.running.add(key)
        self.most_keys_at_once = max(self.most_keys_at_once, len(self.running))
        self.order[key].append(job.payload["seq"])
        try:
            await trio.sleep(work)
        finally:
            self.running.discard(key)
        self.count += 1
        if self.count == self.expected:
            self.all_done.set()


async def test_one_key_runs_one_message_at_a_time_in_publish_order(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub(MemoryBus())
    runs = Runs()
    runs.expected = 10 * 30
    rng = random.Random(7)

    @hub.action("orders", ordered=True, max_workers=8, buffer=1000)
    async def orders(job: Job) -> None:
        await runs.run(job, rng.random() / 100)

    async with hub.running():
        for seq in range(30):
            for key in range(10):
                await hub.publish("orders", {"seq": seq}, key=f"order-{key}")
        await runs.all_done.wait()
    assert runs.same_key_at_once == 0
    assert all(order == list(range(30)) for order in runs.order.values()), runs.order
    assert runs.most_keys_at_once == 8  # different keys do run side by side


async def test_a_retry_is_held_in_place_so_later_messages_of_its_key_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = ActionHub(MemoryBus())
    seen: list[tuple[str, int, int]] = []
    done = trio.Event()

    @hub.action("orders", ordered=True, max_workers=4, retry_backoff=(1, 1, 0))
    async def orders(job: Job) -> None:
        seen.append((job.key or "", job.payload, job.attempt))
        if job.payload == 0 and job.attempt < 3:
            if job.attempt == 1:
                raise Retry(0.5)
            raise RuntimeError("fails once more")
        if len(seen) == 6:
            done.set()

    async with hub.running():
        for seq in range(3):
            await hub.publish("orders", seq, key="a")
        await hub.publish("orders", 10, key="b")
        await done.wait()
        stat = hub.stats()[0]
    assert [s for s in seen if s[0] == "a"] == [
        ("a", 0, 1),
        ("a", 0, 2),
        ("a", 0, 3),
        ("a", 1, 1),
        ("a", 2, 1),
    ]
    assert seen[1] == ("b", 10, 1)  # another key is not held up by the retries
    assert stat.total_retried == 2 and stat.total_panics == 1 and stat.total_message_processed == 4


async def test_a_run_cancelled_by_a_restart_runs_again_before_the_rest_of_its_key(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = ActionHub(MemoryBus())
    seen: list[tuple[int, int]] = []
    done = trio.Event()

    @hub.action("orders", ordered=True, max_workers=2, shutdown_timeout=1)
    async def orders(job: Job) -> None:
        seen.append((job.payload, job.attempt))
        if job.payload == 0 and job.attempt == 1:
            await trio.sleep_forever()  # cancelled by the restart below
        if job.payload == 2:
            done.set()

    async with hub.running():
        for seq in range(3):
            await hub.publish("orders", seq, key="a")
        await wait_until(lambda: seen == [(0, 1)])
        hub.group("orders").restart()
        await done.wait()
    assert seen == [(0, 1), (0, 2), (1, 1), (2, 1)]


async def test_unkeyed_messages_of_an_ordered_group_run_side_by_side(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub(MemoryBus())
    running = 0
    most = 0
    done = trio.Event()
    count = 0

    @hub.action("orders", ordered=True, max_workers=5)
    async def orders(job: Job) -> None:
        nonlocal running, most, count
        running += 1
        most = max(most, running)
        await trio.sleep(1)
        running -= 1
        count += 1
        if count == 10:
            done.set()

    async with hub.running():
        for seq in range(10):
            await hub.publish("orders", seq)
        await done.wait()
    assert most == 5


def test_keys_are_checked_on_the_way_out_and_in() -> None:
    with pytest.raises(ConfigurationError, match="partitions only applies with ordered=True"):
        ActionHub().bind("x", _noop, partitions=8)
    with pytest.raises(ConfigurationError, match="at most 1024"):
        ActionHub().bind("x", _noop, ordered=True, partitions=4096)
    assert decode("t", b'{"payload": 1, "key": "order-1"}').key == "order-1"
    for bad in (b'{"payload": 1, "key": ""}', b'{"payload": 1, "key": 7}'):
        with pytest.raises(MalformedMessage, match="'key' must be a non-empty string"):
            decode("t", bad)


async def test_publishing_with_a_bad_key_fails_loudly() -> None:
    async with ActionHub().running() as hub:
        with pytest.raises(ConfigurationError, match="key must be a non-empty string"):
            await hub.publish("t", 1, key="")
        with pytest.raises(ValueError, match="2 keys for 1 payloads"):
            await hub.publish_many("t", [1], keys=["a", "b"])


async def _noop(job: Job) -> None:
    pass


# ---------------------------------------------------------------------- on Redis, in one process


@pytest.fixture
def ordered_url(redis_server: RedisServer) -> str:
    """A prefix of the test's own; leases that lapse within 2 s (a dead hub is noticed fast)."""
    return f"{redis_server.url}?prefix=o{uuid.uuid4().hex[:8]}:&visibility_timeout=2&block=0.2"


@pytest.fixture
def any_ordered_url(bus_url: str) -> str:
    """`ordered_url` on either layout (a single node, a cluster)."""
    return f"{bus_url}&visibility_timeout=2&block=0.2"


def _prefix(url: str) -> str:
    return url.split("prefix=")[1].split("&")[0]


async def test_keyed_messages_go_to_their_partition_stream(ordered_url: str) -> None:
    prefix = _prefix(ordered_url)
    client = redis.Redis.from_url(ordered_url.split("?")[0])
    async with ActionHub(ordered_url).running() as hub:
        await hub.publish("orders", 1, key="order-42")
        await hub.publish("orders", 2)
        await hub.publish_many("orders", [3, 4], keys=["order-42", None])
    assert client.mget([f"{prefix}partitions:orders"]) == [b"16"]  # the first keyed publisher set it
    partition = partition_of("order-42", 16)
    assert client.xlen(f"{prefix}orders:p{partition}") == 2
    assert client.xlen(f"{prefix}orders") == 2


async def test_two_hubs_split_the_partitions_and_keep_each_key_in_order(ordered_url: str) -> None:
    runs = Runs()
    runs.expected = 20 * 25
    hubs = [ActionHub(ordered_url, name=f"hub-{n}") for n in range(2)]

    async def orders(job: Job) -> None:
        await runs.run(job, 0.001)

    for hub in hubs:
        hub.bind("orders", orders, ordered=True, partitions=8, max_workers=8)

    def owned() -> list[int]:
        return [hub.stats()[0].partitions_owned for hub in hubs]

    async with hubs[0].running(), hubs[1].running():
        await wait_until(lambda: sum(owned()) == 8 and min(owned()) > 0)
        for seq in range(25):
            await hubs[0].publish_many("orders", [{"seq": seq}] * 20, keys=[f"k{key}" for key in range(20)])
        with trio.fail_after(30):
            await runs.all_done.wait()
        stats = [hub.stats()[0] for hub in hubs]
        await hubs[0].stop()  # it leaves: its partitions move to the other hub at once
        with trio.fail_after(5):
            await wait_until(lambda: hubs[1].stats()[0].partitions_owned == 8)
    assert runs.same_key_at_once == 0
    assert all(order == list(range(25)) for order in runs.order.values())
    assert sum(s.total_message_processed for s in stats) == 500
    assert all(s.total_message_processed > 0 and s.total_rebalances >= 1 for s in stats)
    assert runs.most_keys_at_once > 1


async def test_a_keyed_topic_s_partitions_lie_in_several_slots_of_a_cluster_and_keep_each_key_in_order(
    cluster_url: str,
) -> None:
    """In the cluster layout the partitions of one topic carry the tags of different shards (so
    they spread over the nodes); two hubs reading them still run each key in publish order."""
    url = f"{cluster_url}&visibility_timeout=2&block=0.2"
    keys = keys_of(url)
    assert isinstance(keys, ClusterKeys)
    slots = {keys.slot_of(keys.partition("orders", p)) for p in range(8)}
    assert len(slots) == 8 and keys.slot_of(keys.stream("orders")) not in slots
    runs = Runs()
    runs.expected = 12 * 10
    hubs = [ActionHub(url, name=f"hub-{n}") for n in range(2)]

    async def orders(job: Job) -> None:
        await runs.run(job, 0.001)

    for hub in hubs:
        hub.bind("orders", orders, ordered=True, partitions=8, max_workers=8)

    def owned() -> list[int]:
        return [hub.stats()[0].partitions_owned for hub in hubs]

    async with hubs[0].running(), hubs[1].running():
        await wait_until(lambda: sum(owned()) == 8 and min(owned()) > 0)
        for seq in range(10):
            for key in range(12):
                await hubs[seq % 2].publish("orders", {"seq": seq}, key=f"k{key}")
        with trio.fail_after(30):
            await runs.all_done.wait()
        stats = [hub.stats()[0] for hub in hubs]
    client = client_of(url)
    used = [p for p in range(8) if client.xlen(keys.partition("orders", p))]
    assert len({keys.slot_of(keys.partition("orders", p)) for p in used}) > 1
    assert runs.same_key_at_once == 0
    assert all(order == list(range(10)) for order in runs.order.values())
    assert all(s.total_message_processed > 0 for s in stats)


async def test_dead_letters_of_partition_entries_are_filed_before_their_acks(any_ordered_url: str) -> None:
    """A keyed message that fails for good and a malformed entry of a partition end in the topic's
    dead letters and leave nothing pending (in a cluster the dead letters lie in another slot)."""
    keys, client = keys_of(any_ordered_url), client_of(any_ordered_url)
    ran: list[int] = []

    async def orders(job: Job) -> None:
        ran.append(job.payload)
        if job.payload == 1:
            raise RuntimeError("no")

    async with ActionHub(any_ordered_url).running() as hub:
        hub.bind("orders", orders, ordered=True, partitions=2, max_attempts=1)
        await wait_until(lambda: hub.stats() != [] and hub.stats()[0].partitions_owned == 2)
        await hub.publish("orders", 1, key="k")
        stream = keys.partition("orders", partition_of("k", 2))
        client.xadd(stream, {"message": b"{not json"})
        await hub.publish("orders", 2, key="k")
        await wait_until(lambda: ran == [1, 2])
        await wait_until(lambda: client.xlen(keys.dead("orders")) == 2)
        await wait_until(lambda: client.xpending(stream, "orders")["pending"] == 0)
        letters = await hub.dead_letters("orders")
    assert sorted(letter.reason.split(":")[0] for letter in letters) == ["malformed", "max_attempts"]


async def test_partitions_settle_where_the_assignment_puts_them_long_before_a_lease_lapses(
    redis_server: RedisServer,
) -> None:
    prefix = f"o{uuid.uuid4().hex[:8]}:"
    url = f"{redis_server.url}?prefix={prefix}"  # leases last visibility_timeout: 30 s
    client = redis.Redis.from_url(redis_server.url)
    hubs = [ActionHub(url, name=f"hub-{n}") for n in range(3)]
    for hub in hubs:
        hub.bind("orders", _noop, ordered=True)

    def settled() -> bool:
        members = [m.decode() for m in client.zrange(f"{prefix}members:orders:orders", 0, -1)]
        owners = assign(members, 16)
        holders = client.mget([f"{prefix}lease:orders:orders:{p}" for p in range(16)])
        held = [hub.stats()[0].partitions_owned for hub in hubs]
        return (
            len(members) == 3
            and [h and h.decode() for h in holders] == [owners[p] for p in range(16)]
            and (sum(held) == 16)
        )

    async with hubs[0].running(), hubs[1].running(), hubs[2].running():
        # every hand-over ends within a tick or two; a lease taken back by mistake would hold
        # its partition for the whole 30 s
        await wait_until(settled, timeout=10)


async def test_a_partition_count_is_fixed_once_set(ordered_url: str, escalations: EscalationLog) -> None:
    hub = ActionHub(ordered_url, on_escalation=escalations)
    hub.bind("first", _noop, topic="orders", ordered=True, partitions=4)
    hub.bind("second", _noop, topic="orders", ordered=True, partitions=8)
    hub.bind("adopts", _noop, topic="orders", ordered=True)  # no count given: takes the topic's
    async with hub.running():
        names = [stat.addr for stat in hub.stats()]
    assert names == ["first", "adopts"]
    assert escalations.reasons() == ["start_failure"]
    assert "has 4 partitions" in str(escalations[0].error)


async def test_an_unordered_group_reads_every_partition_even_one_made_after_it_started(
    any_ordered_url: str,
) -> None:
    seen: list[int] = []

    async def audit(job: Job) -> None:
        seen.append(job.payload)

    async with ActionHub(any_ordered_url).running() as hub:
        hub.bind("audit", audit, topic="orders")
        await wait_until(lambda: bool(hub.stats()))
        await hub.publish("orders", 1)
        await hub.publish("orders", 2, key="order-1")  # makes the partitions after the group started
        await hub.publish("orders", 3, key="order-2")
        await wait_until(lambda: sorted(seen) == [1, 2, 3])
        history = await hub.bus.history("orders")
    assert sorted(message.payload for _, message in history) == [1, 2, 3]


async def test_a_new_owner_runs_a_dead_hub_s_unacked_entries_first_in_order(any_ordered_url: str) -> None:
    keys, client = keys_of(any_ordered_url), client_of(any_ordered_url)
    client.set(keys.partitions("orders"), 1)
    stream = keys.partition("orders", 0)
    client.xgroup_create(stream, "orders", id="0", mkstream=True)
    for seq in range(5):
        client.xadd(stream, {"message": f'{{"payload": {seq}, "key": "a"}}'})
    # a hub that died holding seq 0..2 (read, never acked) and the partition's lease
    client.xreadgroup("orders", "dead-hub", {stream: ">"}, count=3)
    client.set(keys.lease("orders", "orders", 0), "dead-hub", px=1500)
    client.zadd(keys.members("orders", "orders"), {"dead-hub": 0})
    seen: list[tuple[int, int]] = []

    async def orders(job: Job) -> None:
        seen.append((job.payload, job.attempt))

    async with ActionHub(any_ordered_url).running() as hub:
        hub.bind("orders", orders, ordered=True)
        await wait_until(lambda: len(seen) == 5)
        await wait_until(lambda: client.xpending(stream, "orders")["pending"] == 0)
    assert seen == [(0, 2), (1, 2), (2, 2), (3, 1), (4, 1)]


async def test_a_hub_that_lost_a_lease_stops_reading_and_takes_back_what_it_had_not_started(
    ordered_url: str,
) -> None:
    prefix = _prefix(ordered_url)
    client = redis.Redis.from_url(ordered_url.split("?")[0])
    gate = trio.Event()
    started: list[int] = []

    async def slow(job: Job) -> None:
        started.append(job.payload)
        await gate.wait()

    async with ActionHub(ordered_url).running() as hub:
        hub.bind("orders", slow, ordered=True, partitions=1, max_workers=1)
        await wait_until(lambda: bool(hub.stats()) and hub.stats()[0].partitions_owned == 1)
        for seq in range(5):
            await hub.publish("orders", seq, key="a")
        await wait_until(lambda: started == [0] and hub.stats()[0].buffered == 4)
        # as if this hub had stalled past its lease and another had taken the partition
        client.set(f"{prefix}lease:orders:orders:0", "another-hub", px=60_000)
        await wait_until(lambda: hub.stats()[0].partitions_owned == 0)
        assert hub.stats()[0].buffered == 0  # taken back: the new owner runs them
        gate.set()
        await wait_until(lambda: hub.stats()[0].in_flight == 0)
        await hub.publish("orders", 5, key="a")  # not read here any more
        await trio.sleep(0.5)  # room for a wrong read (block is 0.2 s): an absence cannot be awaited
    assert started == [0]
    (group,) = client.xinfo_groups(f"{prefix}orders:p0")
    assert group["pending"] + group["lag"] == 5  # all but the one that ran, left for the new owner


async def test_a_dead_lettered_keyed_message_is_requeued_to_its_partition(ordered_url: str) -> None:
    prefix = _prefix(ordered_url)
    client = redis.Redis.from_url(ordered_url.split("?")[0])
    seen: list[int] = []

    async def picky(job: Job) -> None:
        seen.append(job.attempt)
        if len(seen) == 1:
            raise Reject("not yet")

    async with ActionHub(ordered_url).running() as hub:
        hub.bind("orders", picky, ordered=True, partitions=2)
        await wait_until(lambda: bool(hub.stats()) and hub.stats()[0].partitions_owned == 2)
        await hub.publish("orders", 1, key="k")
        await wait_until(lambda: bool(seen))
        await wait_until(lambda: client.xlen(f"{prefix}dead:orders") == 1)
        assert await hub.requeue_dead_letters("orders") == 1
        await wait_until(lambda: len(seen) == 2)
    assert client.xlen(f"{prefix}orders:p{partition_of('k', 2)}") >= 1
    assert client.xlen(f"{prefix}orders") == 0


async def test_ordered_groups_need_a_bus_that_can_keep_order(
    redis_server: RedisServer, escalations: EscalationLog
) -> None:
    hub = ActionHub(f"{redis_server.url}?mode=pubsub", on_escalation=escalations)
    hub.bind("orders", _noop, ordered=True)
    async with hub.running():
        assert hub.stats() == []
    assert "needs mode=stream" in str(escalations[0].error)


async def test_a_hand_over_releases_a_partition_only_once_its_acks_are_in_redis(
    ordered_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RedisBusBase.call_async

    async def slow_acks(self: RedisBusBase, fn: Any, *, what: str, **options: Any) -> Any:
        if what == "ack":  # a slow network: the acker's batch is still on its way at the hand-over
            await trio.sleep(1)
        return await original(self, fn, what=what, **options)

    monkeypatch.setattr(RedisBusBase, "call_async", slow_acks)
    runs: Counter[str] = Counter()
    # acks queue up behind the slow ones: the lease of an acked entry must outlast its late XACK
    url = ordered_url.replace("visibility_timeout=2", "visibility_timeout=10")
    hubs = [ActionHub(url, name=f"hub-{n}") for n in range(2)]

    async def orders(job: Job) -> None:
        runs[job.message.id] += 1
        await trio.sleep(0.01)

    for hub in hubs:
        hub.bind("orders", orders, ordered=True, partitions=8, max_workers=8)
    async with hubs[0].running():
        await wait_until(lambda: hubs[0].stats()[0].partitions_owned == 8)

        async def publish() -> None:
            for seq in range(40):
                await hubs[0].publish_many("orders", [seq] * 20, keys=[f"k{k}" for k in range(20)])
                await trio.sleep(0.05)  # a steady stream, so that acks are on their way at every move

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            await trio.sleep(0.5)
            async with hubs[1].running():  # partitions move while acks are on their way
                await wait_until(lambda: len(runs) == 800 and hubs[1].stats()[0].partitions_owned > 0)
    assert set(runs.values()) == {1}


async def test_an_escalating_ordered_group_keeps_its_partitions_until_its_workers_are_done(
    ordered_url: str, escalations: EscalationLog
) -> None:
    prefix = _prefix(ordered_url)
    client = redis.Redis.from_url(ordered_url.split("?")[0])
    running, gate = trio.Event(), trio.Event()

    async def orders(job: Job) -> None:
        if job.payload == "slow":
            running.set()
            await gate.wait()
        else:
            raise RuntimeError("boom")

    hub = ActionHub(ordered_url, on_escalation=escalations)
    hub.bind(
        "orders", orders, ordered=True, partitions=1, behaviour=Behaviour.STOP_ALL_AND_ESCALATE, max_workers=2
    )
    async with hub.running():
        await wait_until(lambda: bool(hub.stats()) and hub.stats()[0].partitions_owned == 1)
        await hub.publish("orders", "slow", key="a")
        await running.wait()
        await hub.publish("orders", "boom", key="b")
        await wait_until(lambda: hub.stats()[0].total_panics == 1)
        await trio.sleep(1)  # the escalation is under way (ticks go on); the slow message still runs
        assert client.mget([f"{prefix}lease:orders:orders:0"])[0] is not None  # not handed to anyone yet
        gate.set()
        await wait_until(lambda: client.mget([f"{prefix}lease:orders:orders:0"])[0] is None)
    assert escalations.reasons() == ["panic"]
    (group,) = client.xinfo_groups(f"{prefix}orders:p0")
    assert group["pending"] == 1  # the slow one was acked; the one that escalated is left to retry


async def test_a_hub_stopping_while_it_takes_a_partition_over_ends_cleanly(ordered_url: str) -> None:
    gate = trio.Event()
    started = trio.Event()

    async def slow(job: Job) -> None:
        started.set()
        await gate.wait()

    async def quick(job: Job) -> None:
        await trio.sleep(0.2)

    a, b = ActionHub(ordered_url, name="hub-a"), ActionHub(ordered_url, name="hub-b")
    a.bind("orders", slow, ordered=True, partitions=4, max_workers=1, shutdown_timeout=30)
    b.bind("orders", quick, ordered=True, partitions=4, max_workers=1)
    async with a.running(), b.running():
        await wait_until(lambda: [h.stats()[0].partitions_owned for h in (a, b)] == [2, 2])
        await a.publish_many("orders", list(range(40)), keys=[f"k{i}" for i in range(40)])
        await started.wait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.stop)  # waits for its slow message: its coordinator still ticks
            await b.stop()  # gives back what it had not started: a takes its partitions over
            await trio.sleep(2)  # a tick or two of a, while its intake is closed
            gate.set()
    client = redis.Redis.from_url(ordered_url.split("?")[0])
    prefix = _prefix(ordered_url)
    assert client.zcard(f"{prefix}members:orders:orders") == 0
    assert client.keys(f"{prefix}lease:*") == []


async def test_messages_handed_over_unstarted_keep_their_attempt_number(ordered_url: str) -> None:
    gate = trio.Event()
    attempts: list[int] = []

    async def blocked(job: Job) -> None:
        await gate.wait()

    async def record(job: Job) -> None:
        attempts.append(job.attempt)

    a, b = ActionHub(ordered_url, name="hub-a"), ActionHub(ordered_url, name="hub-b")
    a.bind("orders", blocked, ordered=True, partitions=1, max_workers=1)
    b.bind("orders", record, ordered=True, partitions=1)
    async with a.running():
        await wait_until(lambda: bool(a.stats()) and a.stats()[0].partitions_owned == 1)
        await a.publish_many("orders", list(range(6)), keys=[f"k{i}" for i in range(6)])
        await wait_until(lambda: a.stats()[0].buffered == 5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.stop)  # the running one finishes; five are given back unstarted
            await wait_until(lambda: not a.is_running)
            gate.set()
    async with b.running():
        await wait_until(lambda: len(attempts) == 5)
    assert attempts == [1] * 5


async def test_the_history_of_a_partitioned_topic_is_one_timeline_read_in_pages(ordered_url: str) -> None:
    async with ActionHub(ordered_url).running() as hub:
        for n in range(9):  # keyed ones over several partitions, unkeyed ones on the topic's stream
            await hub.publish("orders", n, key=f"order-{n}" if n % 3 else None)
            await trio.sleep(0.002)  # entry ids are milliseconds: across streams, one ms is one instant
        first = await hub.bus.history("orders", count=4)
        rest = await hub.bus.history("orders", first=f"({first[-1][0]}", count=100)
    assert [m.payload for _, m in first] == [0, 1, 2, 3]  # the oldest first, not the newest
    assert [m.payload for _, m in rest] == [4, 5, 6, 7, 8]
