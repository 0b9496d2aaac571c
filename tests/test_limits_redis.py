"""Rate and concurrency limits on Redis, shared by every hub of a group: three hub processes
(tests/limited_hub.py) keep one rate and one concurrency limit between them, measured on the
Redis clock by their actions; a SIGKILLed hub's slots lapse within its visibility timeout; a run
waiting for a limit keeps its message's lease; a hub gives its slots back as it stops."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis
import trio

from actionhub import ActionHub, Job
from actionhub.bus.redis import scripts
from actionhub.bus.redis.options import split_url
from tests.chaos.proxy import ChaosProxy
from tests.layouts import client_of, keys_of
from tests.limited_hub import run_keys
from tests.polling import wait_until


def _spawn(url: str, name: str, *options: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.limited_hub", url, name, *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


def _spawn_all(url: str, count: int, *options: str) -> list[subprocess.Popen[bytes]]:
    """``count`` hubs, started at once (each takes a second or so to import and connect)."""
    command = [sys.executable, "-m", "tests.limited_hub", url]
    root = Path(__file__).parent.parent
    hubs = [
        subprocess.Popen([*command, f"hub-{n}", *options], stdout=subprocess.PIPE, cwd=root)
        for n in range(count)
    ]
    for process in hubs:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return hubs


def _stop(hubs: list[subprocess.Popen[bytes]]) -> None:
    for process in hubs:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in hubs:
        process.wait(timeout=30)


class Runs:
    """What the test actions recorded in Redis."""

    def __init__(self, url: str) -> None:
        self.client = client_of(url)
        self.running, self.most, self.list = run_keys(split_url(url)[1].prefix)
        self.keys = keys_of(url)

    def count(self) -> int:
        return int(self.client.llen(self.list))

    def all(self) -> list[tuple[int, str, str, int]]:
        """(Redis time in us, hub, payload, attempt) of every run, in start order."""
        runs = []
        for raw in self.client.lrange(self.list, 0, -1):
            at, hub, payload, attempt = raw.decode().split()
            runs.append((int(at), hub, payload, int(attempt)))
        return runs

    def most_at_once(self) -> int:
        return int(self.client.get(self.most) or 0)

    def redis_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000


async def _publish(url: str, count: int) -> None:
    async with ActionHub(url, name="publisher").running() as publisher:
        await publisher.publish_many("limited", list(range(count)))


async def test_three_hub_processes_share_one_rate(redis_url: str) -> None:
    runs = Runs(redis_url)
    hubs = await trio.to_thread.run_sync(_spawn_all, redis_url, 3, "--rate", "50/s")
    try:
        await _publish(redis_url, 500)
        await wait_until(lambda: runs.count() >= 500, timeout=40, poll=0.2)
    finally:
        _stop(hubs)
    recorded = runs.all()
    assert sorted(int(payload) for _, _, payload, _ in recorded) == list(range(500))  # each once
    assert {attempt for *_, attempt in recorded} == {1}  # waiting burned no attempt
    starts = [at for at, *_ in recorded]
    rate = (len(starts) - 1) / ((max(starts) - min(starts)) / 1e6)
    assert 45 <= rate <= 55, rate  # 50/s in total, on the Redis clock
    per_hub = Counter(hub for _, hub, _, _ in recorded)
    print(f"three hubs at rate_limit='50/s': {rate:.1f}/s together, {dict(per_hub)}")
    assert len(per_hub) == 3, per_hub  # every hub ran its share, within the one rate


async def test_three_hub_processes_share_one_concurrency_limit(redis_url: str) -> None:
    runs = Runs(redis_url)
    hubs = await trio.to_thread.run_sync(
        _spawn_all, redis_url, 3, "--concurrency", "4", "--max-workers", "4", "--work", "0.05"
    )
    try:
        await _publish(redis_url, 120)
        await wait_until(lambda: runs.count() >= 120, timeout=40, poll=0.1)
        await wait_until(lambda: int(runs.client.get(runs.running) or 0) == 0, timeout=10)
    finally:
        _stop(hubs)
    recorded = runs.all()
    assert sorted(int(payload) for _, _, payload, _ in recorded) == list(range(120))
    assert runs.most_at_once() == 4  # never more than 4 at once over the three hubs (and 4 is reached)
    per_hub = Counter(hub for _, hub, _, _ in recorded)
    assert len(per_hub) == 3, per_hub  # no hub kept the slots to itself
    slots = runs.keys.limits("limited", "limited")[1]
    assert runs.client.zcard(slots) == 0  # the hubs gave their slots back as they stopped


async def test_a_killed_hubs_slots_lapse_within_its_visibility_timeout(redis_url: str) -> None:
    url = f"{redis_url}&visibility_timeout=1.5&block=0.2"
    runs = Runs(url)
    slots = runs.keys.limits("limited", "limited")[1]
    victim = await trio.to_thread.run_sync(
        lambda: _spawn(url, "victim", "--concurrency", "2", "--work", "600")
    )
    try:
        await _publish(url, 3)
        await wait_until(lambda: runs.count() == 2 and runs.client.zcard(slots) == 2, timeout=20)
        first = dict(runs.client.zrange(slots, 0, -1, withscores=True))
        counts: list[int] = []

        def renewed_past_their_first_lapse() -> bool:
            """The Redis clock is past the slots' first lapse, and they are still there, lapsing
            later: the living victim renewed them (a lapsed slot is removed by its next call)."""
            now = runs.redis_ms()
            scores = dict(runs.client.zrange(slots, 0, -1, withscores=True))
            counts.append(len(scores))
            return now > max(first.values()) and all(scores.get(m, 0) > s for m, s in first.items())

        await wait_until(renewed_past_their_first_lapse, timeout=20)
        assert set(counts) == {2}  # never one less: no slot lapsed while the victim lived
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = runs.redis_ms()  # dead by now: it renews nothing after this
    finally:
        _stop([victim])
    lapses = [score for _, score in runs.client.zrange(slots, 0, -1, withscores=True)]
    assert len(lapses) == 2 and max(lapses) <= killed_at + 1500  # they lapse within the timeout
    ran: list[tuple[object, int]] = []
    heir = ActionHub(url, name="heir")

    @heir.action("limited", max_workers=4, concurrency_limit=2)
    async def limited(job: Job) -> None:
        ran.append((job.payload, job.attempt))

    async with heir.running():
        # the victim's messages (two running, one waiting for a slot) come back (reclaimed,
        # a second delivery each) and run here, two at once: the victim's slots lapsed
        await wait_until(lambda: len(ran) == 3, timeout=20)
    assert sorted(ran, key=str) == [(0, 2), (1, 2), (2, 2)]


async def test_a_run_waiting_for_the_rate_keeps_its_lease(bus_url: str) -> None:
    """Three messages read by one hub at once, ``1/s``: the last waits two seconds, past the
    visibility timeout; another hub of the group, looking for abandoned messages meanwhile,
    takes none (the waiting ones' leases are renewed), so each runs once, at attempt 1."""
    url = f"{bus_url}&visibility_timeout=1&block=0.2"
    ran: list[tuple[str, object, int]] = []
    one, two = ActionHub(url, name="one"), ActionHub(url, name="two")
    for hub in (one, two):

        async def limited(job: Job, name: str = hub.name) -> None:
            ran.append((name, job.payload, job.attempt))

        hub.bind("limited", limited, max_workers=4, buffer=10, rate_limit="1/s")
    async with one.running():
        await one.publish_many("limited", [0, 1, 2])
        await wait_until(lambda: len(ran) == 1, timeout=10)
        async with two.running():
            await wait_until(lambda: len(ran) == 3, timeout=10)
            await trio.sleep(1.5)  # time for a wrongful reclaim to show
            (stat,) = one.stats()
    assert sorted(ran, key=str) == [("one", 0, 1), ("one", 1, 1), ("one", 2, 1)]
    assert stat.total_throttled == 2 and stat.rate_limit == "1/s"
    assert stat.total_failed == 0 and stat.total_retried == 0


_CALLS = itertools.count(1)


def _limit(client: redis.Redis, keys: list[str], hub: str, **fields: object) -> list[int]:
    """One call of `scripts.LIMIT` (the arguments the hubs' limiters send, by name; a new call
    number unless ``call`` is given)."""
    args = {
        "interval": 0, "tolerance": 0, "limit": 0, "lease": 30_000, "window": 1000, "hub": hub,
        "held": 0, "tokens": 0, "slots": 0, "firm": 0, "both": 0, "first": 0, "returns": 0,
        "call": next(_CALLS), "spec": "concurrency_limit=4",
    }  # fmt: skip
    args.update(fields)
    releases = list(args.pop("releases", []))  # type: ignore[call-overload]
    reply_key = f"{keys[1]}:reply:{hub}"
    reply = client.register_script(scripts.LIMIT)(keys=[*keys, reply_key], args=[*args.values(), *releases])
    return [int(x) for x in reply[:4]]


def test_the_limit_script_shares_slots_with_hubs_that_wait(bus_url: str) -> None:
    runs = Runs(bus_url)
    keys = list(runs.keys.limits("t", "g"))
    # a alone takes all 4 slots; b asks in vain: it waits (nobody else does: not contended)
    assert _limit(runs.client, keys, "a", limit=4, slots=4, firm=4)[::3] == [4, 0]
    assert _limit(runs.client, keys, "b", limit=4, slots=2, firm=2)[::3] == [0, 0]
    # a gives one back and asks again: b waits, so a's share is 2 and it holds 3: nothing more
    assert _limit(runs.client, keys, "a", limit=4, held=3, slots=1, firm=1, releases=["a:0"])[::3] == [0, 1]
    # the slot a gave back goes to b
    assert _limit(runs.client, keys, "b", limit=4, slots=2, firm=2, first=2)[::3] == [1, 1]
    assert sorted(m.decode() for m in runs.client.zrange(keys[1], 0, -1)) == ["a:1", "a:2", "a:3", "b:2"]


def test_the_limit_script_is_gcra_and_takes_tokens_back(redis_url: str) -> None:
    runs = Runs(redis_url)
    keys = list(runs.keys.limits("t", "g"))
    interval = 60_000_000  # one a minute: the test takes far less than one interval
    slots, tokens, wait, _ = _limit(runs.client, keys, "a", interval=interval, tolerance=interval, tokens=5)
    assert (slots, tokens) == (0, 2)  # a burst of 2
    assert interval - 1_000_000 < wait <= interval
    assert _limit(runs.client, keys, "a", interval=interval, tolerance=interval, tokens=5)[1] == 0
    # one given back (taken ahead of need, never used) can be taken again at once, no more
    assert _limit(runs.client, keys, "b", interval=interval, tolerance=interval, tokens=5, returns=1)[1] == 1
    assert _limit(runs.client, keys, "b", interval=interval, tolerance=interval, tokens=5, returns=0)[1] == 0
    # with both limits each new slot brings its token
    both = {"interval": interval, "tolerance": interval, "limit": 3, "both": 1}
    fresh = [f"{key}:x" for key in keys]
    assert _limit(runs.client, fresh, "c", **both, slots=3, firm=3)[:2] == [3, 2]


async def test_a_stop_ends_the_waits_and_gives_back_slots_and_messages(bus_url: str) -> None:
    """One slot, one run holding it past shutdown_timeout, two runs waiting: the stop ends the
    waits at once, the slot goes back to Redis, and every message runs on the next hub."""
    runs = Runs(bus_url)
    slots = runs.keys.limits("limited", "limited")[1]
    ran: list[tuple[str, object]] = []
    one, two = ActionHub(bus_url, name="one"), ActionHub(bus_url, name="two")
    for hub in (one, two):

        async def limited(job: Job, name: str = hub.name) -> None:
            ran.append((name, job.payload))
            if name == "one":
                await trio.sleep(600)

        hub.bind("limited", limited, max_workers=3, concurrency_limit=1, shutdown_timeout=0.5)
    async with one.running():
        await one.publish_many("limited", [0, 1, 2])
        await wait_until(lambda: len(ran) == 1 and one.stats()[0].total_throttled == 2, timeout=10)
        assert runs.client.zcard(slots) == 1
    (stat,) = one.stats()
    assert stat.total_failed == 0 and stat.total_message_processed == 0
    assert runs.client.zcard(slots) == 0  # given back as the hub stopped, not at its lapse
    async with two.running():
        await wait_until(lambda: len(ran) == 4, timeout=10)
    assert sorted(payload for name, payload in ran if name == "two") == [0, 1, 2]  # nothing lost


async def test_an_ordered_group_keeps_each_keys_order_under_a_rate_limit(redis_url: str) -> None:
    ran: list[tuple[str, int]] = []
    hub = ActionHub(redis_url, name="ordered")

    @hub.action("limited", ordered=True, partitions=4, max_workers=4, rate_limit="40/s")
    async def limited(job: Job) -> None:
        ran.append((job.message.key or "", job.payload))
        await trio.sleep(0.01)

    async with hub.running():
        for seq in range(10):
            await hub.publish_many("limited", [seq] * 3, keys=["a", "b", "c"])
        await wait_until(lambda: len(ran) == 30, timeout=20)
        (stat,) = hub.stats()
    for key in "abc":
        assert [seq for k, seq in ran if k == key] == list(range(10))
    assert stat.total_throttled > 0 and stat.total_failed == 0


def test_the_limit_script_answers_a_resent_call_again_and_grants_nothing_twice(redis_url: str) -> None:
    """A call whose reply was lost is resent as is (same hub, same call number): it gets the
    first reply again, its slots are the ones the first try granted, its returns count once."""
    runs = Runs(redis_url)
    keys = list(runs.keys.limits("t", "g"))
    assert _limit(runs.client, keys, "a", limit=4, slots=4, firm=4, call=1) == [4, 0, -1, 0]
    assert _limit(runs.client, keys, "a", limit=4, slots=4, firm=4, call=1) == [4, 0, -1, 0]  # resent
    assert sorted(m.decode() for m in runs.client.zrange(keys[1], 0, -1)) == ["a:0", "a:1", "a:2", "a:3"]
    assert _limit(runs.client, keys, "b", limit=4, slots=1)[0] == 0  # a holds them, and knows it
    # a gives two back and asks for one: a resend neither removes nor grants anything again
    again = {"limit": 4, "held": 2, "slots": 1, "first": 4, "releases": ["a:0", "a:1"], "call": 2}
    assert _limit(runs.client, keys, "a", **again)[0] == 1
    assert _limit(runs.client, keys, "a", **again)[0] == 1
    assert runs.client.zcard(keys[1]) == 3  # a:2, a:3, a:4
    # tokens: one a minute, a burst of 1; one taken, then given back by a call sent twice
    rate = {"interval": 60_000_000, "tolerance": 0}
    fresh = [f"{key}:rate-only" for key in keys]
    assert _limit(runs.client, fresh, "a", **rate, tokens=1)[1] == 1
    assert _limit(runs.client, fresh, "a", **rate, returns=1, call=10)[1] == 0
    assert _limit(runs.client, fresh, "a", **rate, returns=1, call=10)[1] == 0  # resent: counted once
    assert _limit(runs.client, fresh, "a", **rate, tokens=5)[1] == 1  # the one given back, no more


async def test_a_hub_whose_limit_reply_is_lost_keeps_its_full_concurrency(redis_url: str) -> None:
    """The reply to the hub's first call of `scripts.LIMIT` is lost (the connection drops after
    Redis ran it) and the call is resent: the hub still runs 4 at once at concurrency_limit=4,
    at once, not after the slots the first try granted lapse (visibility_timeout)."""
    _, options = split_url(redis_url)
    runs = Runs(redis_url)
    runs.client.script_load(scripts.LIMIT)  # so the marked request runs (no NOSCRIPT round first)
    sha = runs.client.register_script(scripts.LIMIT).sha.encode()
    proxy = ChaosProxy(runs.client.connection_pool.connection_kwargs["port"])
    running = 0
    most = 0
    finish = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        hub = ActionHub(proxy.url(f"/0?prefix={options.prefix}"), name="lossy")

        @hub.action("limited", max_workers=8, concurrency_limit=4)
        async def limited(job: Job) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await finish.wait()
            finally:
                running -= 1

        async with hub.running():
            proxy.lose_reply_to(sha)
            await hub.publish_many("limited", list(range(8)))
            await wait_until(lambda: proxy.replies_lost == 1, timeout=10)
            await wait_until(lambda: running == 4, timeout=10)  # not 30 s later
            finish.set()
            await wait_until(lambda: hub.stats()[0].total_message_processed == 8, timeout=10)
        nursery.cancel_scope.cancel()
    assert most == 4
    assert runs.client.zcard(runs.keys.limits("limited", "limited")[1]) == 0  # none left to lapse


async def test_hubs_that_disagree_on_a_groups_limits_warn_once_each(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two hubs of one group with different limits share its keys unevenly: each warns once,
    naming both limits (the spec is stored with the group's state)."""
    ran: list[object] = []
    one, two = ActionHub(redis_url, name="one"), ActionHub(redis_url, name="two")
    for hub, limit in ((one, 2), (two, 3)):

        async def limited(job: Job) -> None:
            ran.append(job.payload)

        hub.bind("limited", limited, max_workers=4, concurrency_limit=limit)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "other limits" in r.getMessage()]

    sent = 0
    with caplog.at_level(logging.WARNING, logger="actionhub.redis"):
        async with one.running(), two.running():
            with trio.fail_after(30):
                while len(warnings()) < 2:  # until each hub has asked after the other
                    await one.publish_many("limited", list(range(sent, sent + 10)))
                    sent += 10
                    await wait_until(lambda n=sent: len(ran) == n, timeout=10)
            await one.publish_many("limited", list(range(sent, sent + 50)))  # asking on: no more warnings
            sent += 50
            await wait_until(lambda: len(ran) == sent, timeout=10)
    assert len(warnings()) == 2, warnings()
    assert all("concurrency_limit=2" in w and "concurrency_limit=3" in w for w in warnings())
