"""The Redis streams transport against a real redis-server started by the test session.

Time is real here (Redis has its own clock), so waits are bounded by ``fail_after``; where another
process does the work, the test polls what it can observe (files, Redis) at a short interval.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import redis
import trio

from actionhub import ActionHub, BusError, Job, Retry
from actionhub.bus.redis import streams as redis_streams
from actionhub.bus.redis.slots import key_slot
from actionhub.testing import RedisServer
from tests.layouts import OnRedis, client_of, keys_of, on_redis
from tests.polling import wait_until
from tests.servers import private_redis, tls_redis

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def prefix_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["prefix"][0]


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis(port=redis_server.port)


@pytest.fixture
def on_bus(bus_url: str) -> Iterator[OnRedis]:
    """The client and key names of ``bus_url`` (single node or cluster)."""
    found = on_redis(bus_url)
    yield found
    found.client.close()


async def test_redis_cli_xadd_runs_the_action(redis_server: RedisServer, redis_url: str) -> None:
    seen: list[object] = []
    done = trio.Event()
    hub = ActionHub(redis_url)

    @hub.action("orders.charge")
    async def charge(job: Job) -> None:
        seen.append((job.payload, job.headers, job.attempt))
        done.set()

    async with hub.running():
        envelope = '{"payload": {"id": 7, "amount": 12.5}, "headers": {"source": "shell"}}'
        command = ["redis-cli", "-p", str(redis_server.port)]
        command += ["XADD", f"{prefix_of(redis_url)}orders.charge", "*", "message", envelope]
        result = await trio.run_process(command, capture_stdout=True)
        assert result.stdout.strip()  # the entry id
        with trio.fail_after(10):
            await done.wait()
    assert seen == [({"id": 7, "amount": 12.5}, {"source": "shell"}, 1)]
    (stat,) = hub.stats()
    assert stat.total_message_processed == 1


async def test_publish_before_the_hub_starts_is_not_lost(bus_url: str) -> None:
    got = trio.Event()
    first = ActionHub(bus_url)
    async with first.running():
        await first.publish("early", {"n": 1})  # nobody consumes "early" yet
    hub = ActionHub(bus_url)

    @hub.action("early")
    async def early(job: Job) -> None:
        got.set()

    async with hub.running():
        with trio.fail_after(10):
            await got.wait()


async def test_publish_many_is_on_redis_in_order_when_it_returns(
    bus_url: str, on_bus: OnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_url = bus_url
    monkeypatch.setattr(redis_streams, "PUBLISH_BATCH", 7)  # several round trips
    seen: list[int] = []
    all_seen = trio.Event()

    hub = ActionHub(redis_url)
    async with hub.running():
        bus: Any = hub.bus
        run_script_once, round_trips = bus.run_script_once, []

        async def counted(script: Any, *args: Any, **kwargs: Any) -> Any:
            round_trips.append(script is bus._publish_many_once)
            return await run_script_once(script, *args, **kwargs)

        monkeypatch.setattr(bus, "run_script_once", counted)
        ids = await hub.publish_many("batch", [{"n": n} for n in range(20)])
        assert round_trips.count(True) == 3  # 7 + 7 + 6: one round trip (one script) each
    entries = on_bus.client.xrange(on_bus.keys.stream("batch"))
    assert [orjson.loads(fields[b"message"])["id"] for _, fields in entries] == ids

    consumer = ActionHub(redis_url)

    @consumer.action("batch", max_workers=1)
    async def batch(job: Job) -> None:
        seen.append(job.payload["n"])
        if len(seen) == 20:
            all_seen.set()

    async with consumer.running():
        with trio.fail_after(10):
            await all_seen.wait()
    assert seen == list(range(20))


async def test_request_reply_and_timeout_leave_no_keys(bus_url: str, on_bus: OnRedis) -> None:
    redis_url, client = bus_url, on_bus.client
    hub = ActionHub(redis_url)

    @hub.action("double")
    async def double(job: Job) -> None:
        await job.reply({"double": job.payload * 2})

    @hub.action("silent")
    async def silent(job: Job) -> None:
        pass

    async with hub.running():
        answer = await hub.request("double", 21, timeout=10)
        assert answer.payload == {"double": 42}
        assert answer.headers["in_reply_to"]
        with pytest.raises(trio.TooSlowError):
            await hub.request("silent", 1, timeout=0.5)
    assert client.keys(f"{prefix_of(redis_url)}reply:*") == []


async def test_poison_message_is_retried_with_growing_delays_then_dead_lettered(
    bus_url: str, on_bus: OnRedis
) -> None:
    redis_url, client = bus_url, on_bus.client
    attempts: list[tuple[int, float]] = []
    fine: list[int] = []
    hub = ActionHub(redis_url)

    @hub.action("work", max_attempts=4, retry_backoff=(0.2, 5, 0))
    async def work(job: Job) -> None:
        if job.payload == "poison":
            attempts.append((job.attempt, trio.current_time()))
            raise ValueError("cannot digest this")
        fine.append(job.payload)

    async with hub.running():
        await hub.publish("work", "poison")
        for i in range(20):
            await hub.publish("work", i)
        await wait_until(lambda: len(attempts) == 4 and len(fine) == 20)
        await wait_until(lambda: client.xlen(on_bus.keys.dead("work")) == 1)
        letters = await hub.dead_letters("work")
    assert [a for a, _ in attempts] == [1, 2, 3, 4]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8  # exponential backoff
    assert sorted(fine) == list(range(20))  # the others flowed meanwhile
    (letter,) = letters
    assert letter.message.payload == "poison" and letter.attempts == 4
    assert letter.reason.startswith("max_attempts") and "cannot digest this" in (letter.error or "")
    assert "ValueError" in (letter.traceback or "")
    assert letter.group == "work"


async def test_retry_goes_only_to_the_group_that_asked(redis_url: str) -> None:
    seen: Counter[tuple[str, int]] = Counter()
    hub = ActionHub(redis_url)

    @hub.action("audit", topic="orders")
    async def audit(job: Job) -> None:
        seen["audit", job.attempt] += 1

    @hub.action("charge", topic="orders")
    async def charge(job: Job) -> None:
        seen["charge", job.attempt] += 1
        if job.attempt == 1:
            raise Retry(delay=0.1)

    async with hub.running():
        await hub.publish("orders", 1)
        await wait_until(lambda: seen["charge", 2] == 1)
        await trio.sleep(0.3)  # room for a wrong extra delivery to show up
    assert seen == {("audit", 1): 1, ("charge", 1): 1, ("charge", 2): 1}


async def test_delayed_message_fires_once_after_its_delay(bus_url: str) -> None:
    redis_url = bus_url
    runs: list[float] = []
    hub = ActionHub(redis_url)
    other = ActionHub(redis_url)  # a second hub moving due messages too: still exactly once

    @hub.action("later")
    async def later(job: Job) -> None:
        runs.append(trio.current_time())

    async with hub.running(), other.running():
        sent = trio.current_time()
        await hub.publish("later", 1, delay=1.0)
        await wait_until(lambda: len(runs) == 1)
        await trio.sleep(0.5)  # room for a wrong second firing (by the other hub) to show up
    assert len(runs) == 1 and runs[0] - sent >= 1.0


async def test_dead_letters_requeue_and_purge(bus_url: str, on_bus: OnRedis) -> None:
    redis_url, client = bus_url, on_bus.client
    calls: list[object] = []
    hub = ActionHub(redis_url)

    @hub.action("flaky", max_attempts=1)
    async def flaky(job: Job) -> None:
        calls.append((job.payload, job.attempt))
        if len(calls) <= 2:
            raise RuntimeError("not yet")

    async with hub.running():
        await hub.publish("flaky", "a")
        await hub.publish("flaky", "b")
        await wait_until(lambda: client.xlen(on_bus.keys.dead("flaky")) == 2)
        letters = {letter.message.payload: letter for letter in await hub.dead_letters("flaky")}
        first, second = letters["a"], letters["b"]  # a and b run concurrently: either may fail first
        assert await hub.requeue_dead_letters("flaky", [first.id]) == 1
        await wait_until(lambda: len(calls) == 3)
        assert calls[-1] == ("a", 1)  # a requeued letter starts again at attempt 1
        assert [letter.id for letter in await hub.dead_letters("flaky")] == [second.id]
        assert await hub.purge_dead_letters("flaky") == 1
        assert await hub.dead_letters("flaky") == []


MALFORMED: list[tuple[dict[str, bytes], str]] = [
    ({"message": b"{not json"}, "not JSON"),
    ({"message": b"[1, 2, 3]"}, "must be a JSON object"),
    ({"message": b'{"id": "x"}'}, "no 'payload'"),
    ({"message": b'{"payload": 1, "headers": {"a": 1}}'}, "'headers' must be an object"),
    ({"message": b'{"payload": 1, "attempt": "one"}'}, "'attempt' must be an integer"),
    ({"message": b'{"payload": 1, "created_at": "now"}'}, "'created_at' must be a number"),
    ({"message": b"\x80\x81\xfe\xff binary \x00 garbage"}, "not JSON"),
    ({"message": orjson.dumps({"payload": "x" * 2000})}, "over the limit of 1000"),
    ({"body": b'{"payload": 1}'}, "no 'message' field"),
    ({"message": b'{"payload": 1, "reply_to": "their:list"}'}, "'reply_to' must be a key under"),
    ({"message": b'{"payload": 1}', "group": b"nobody"}, "entry is for group 'nobody', which"),
    ({"message": b'{"payload": 1}', "group": b"\xff\xfe"}, "entry is for group '\ufffd\ufffd'"),
]


async def test_malformed_entries_are_dead_lettered_with_a_reason(bus_url: str) -> None:
    url = bus_url + "&max_message_bytes=1000"
    client = client_of(bus_url)
    good: list[object] = []
    hub = ActionHub(url)

    @hub.action("intake")
    async def intake(job: Job) -> None:
        good.append(job.payload)

    stream = keys_of(bus_url).stream("intake")
    async with hub.running():
        for fields, _ in MALFORMED:
            client.xadd(stream, fields)  # type: ignore[arg-type]
        client.xadd(stream, {"message": b'{"payload": "fine"}'})
        await wait_until(lambda: good == ["fine"])
        letters = await hub.dead_letters("intake")
        (stat,) = hub.stats()
    for letter, (_, reason) in zip(letters, MALFORMED, strict=True):
        assert letter.reason.startswith("malformed: ") and reason in letter.reason
    assert stat.total_malformed == len(MALFORMED) and stat.total_dead_lettered == len(MALFORMED)
    assert stat.total_panics == 0 and stat.total_message_processed == 1
    assert client.xpending(stream, "intake")["pending"] == 0  # all of them were acked


async def test_a_long_job_is_not_stolen_while_its_hub_lives(bus_url: str) -> None:
    url = bus_url + "&visibility_timeout=1&block=0.2"
    runs: list[str] = []
    hubs = [ActionHub(url, name=f"h{i}") for i in range(2)]
    for hub in hubs:

        @hub.action("long")
        async def long(job: Job, hub: ActionHub = hub) -> None:
            runs.append(hub.name)
            await trio.sleep(3.5)  # three and a half visibility timeouts

    async with hubs[0].running(), hubs[1].running():
        await hubs[0].publish("long", 1)
        await wait_until(lambda: len(runs) == 1)
        await wait_until(lambda: sum(h.stats()[0].total_message_processed for h in hubs) == 1, timeout=10)
    assert len(runs) == 1


def _spawn(url: str, out: Path, name: str, work: float = 0.0, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.hub_process", url, str(out), "--name", name, "--work", str(work)]
    command += extra
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


async def test_keyed_publish_many_takes_one_round_trip_per_slot_and_keeps_each_key_s_order(
    bus_url: str, on_bus: OnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys interleaved: one batch per partition slot in the cluster layout (the clients' grouping,
    `once.batches`), one batch on a single node; each key's messages in order in its stream."""
    keys = ["a", "b", "c"] * 4
    hub = ActionHub(bus_url)
    async with hub.running():
        bus: Any = hub.bus
        run_script_once, round_trips = bus.run_script_once, []

        async def counted(script: Any, *args: Any, **kwargs: Any) -> Any:
            round_trips.append(script is bus._publish_many_once)
            return await run_script_once(script, *args, **kwargs)

        monkeypatch.setattr(bus, "run_script_once", counted)
        ids = await hub.publish_many("keyed", list(range(12)), keys=keys)
        streams = {key: await bus._partition_stream("keyed", key) for key in "abc"}
    slots = {key_slot(stream) for stream in streams.values()}
    assert round_trips.count(True) == (1 if bus.writes_status else len(slots))
    for n, key in enumerate("abc"):
        found = [orjson.loads(fields[b"message"])["id"] for _, fields in on_bus.client.xrange(streams[key])]
        assert found == ids[n::3]


def _publish_many(client: Any, stream: str, count: int, start: int = 0) -> None:
    with client.pipeline(transaction=False) as pipe:
        for i in range(start, start + count):
            pipe.xadd(stream, {"message": b'{"payload": %d}' % i})
        pipe.execute()


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("kill", [False, True], ids=["share", "kill-9-one"])
async def test_two_hub_processes_share_the_work(bus_url: str, tmp_path: Path, kill: bool) -> None:
    url = bus_url + "&visibility_timeout=2&block=0.5"
    client = client_of(bus_url)
    total = 10_000
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    processes = [
        await trio.to_thread.run_sync(_spawn, url, out, f"p{i}", 0.0005 if kill else 0.0)
        for i, out in enumerate(outs)
    ]
    try:
        stream = keys_of(bus_url).stream("count")
        await trio.to_thread.run_sync(_publish_many, client, stream, total)
        if kill:
            await wait_until(lambda: len(_lines(outs[0])) > 500)
            processes[0].kill()  # SIGKILL: no goodbye, its leases just expire
            processes[0].wait()
            done_by_killed = set(_lines(outs[0]))
        await wait_until(lambda: len(set(_lines(outs[0])) | set(_lines(outs[1]))) == total, timeout=90)
        await wait_until(lambda: client.xpending(stream, "count")["pending"] == 0)  # all acked
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait(timeout=30)
    a, b = _lines(outs[0]), _lines(outs[1])
    assert set(a) | set(b) == {str(i) for i in range(total)}  # nothing lost
    assert a and b  # both took a share
    duplicates = Counter(a + b) - Counter(set(a + b))
    if not kill:
        assert not duplicates  # nothing failed: each exactly once
        assert processes[1].returncode == processes[0].returncode == 0
    else:
        # only what the killed hub had finished but not yet acknowledged runs twice
        assert set(duplicates) <= done_by_killed
        assert len(duplicates) <= 8 + 50  # its max_workers + buffer
        assert all(count == 1 for count in duplicates.values())


async def test_a_crash_loop_ends_in_the_dead_letters(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """A message that kills its hub every time: Redis counts the deliveries, and the delivery past
    max_attempts is dead-lettered without running, instead of killing hubs forever."""
    url = redis_url + "&visibility_timeout=1&block=0.2"
    out = tmp_path / "out.txt"
    stream = f"{prefix_of(redis_url)}count"
    client.xadd(stream, {"message": b'{"payload": "deadly"}'})
    client.xadd(stream, {"message": b'{"payload": "fine"}'})
    for _ in range(3):  # max_attempts=3: three hubs die on it
        process = await trio.to_thread.run_sync(
            _spawn, url, out, "victim", 0.0, "--die-on", "deadly", "--max-attempts", "3"
        )
        assert await trio.to_thread.run_sync(process.wait) == -9
    survivor = await trio.to_thread.run_sync(
        _spawn, url, out, "survivor", 0.0, "--die-on", "deadly", "--max-attempts", "3"
    )
    try:
        await wait_until(lambda: client.xlen(f"{prefix_of(redis_url)}dead:count") == 1, timeout=20)
        await wait_until(lambda: "fine" in _lines(out))
    finally:
        survivor.terminate()
        assert await trio.to_thread.run_sync(survivor.wait) == 0
    dying = [line for line in out.read_text().splitlines() if line.startswith("dying")]
    assert dying == [f"dying on deadly at attempt {n}" for n in (1, 2, 3)]
    ((_, letter),) = client.xrange(f"{prefix_of(redis_url)}dead:count")
    assert letter[b"reason"].startswith(b"max_attempts: delivered 4 times")
    assert orjson.loads(letter[b"message"]) == {"payload": "deadly"}  # the original envelope


async def test_a_stopping_hub_hands_unstarted_messages_over_at_once(bus_url: str) -> None:
    """Read-but-unstarted messages of a hub that stops gracefully are claimable at once, not only
    after the visibility timeout (30 s here)."""
    first_done: list[int] = []
    second_done: list[int] = []
    gate = trio.Event()
    first = ActionHub(bus_url, name="first")

    @first.action("handover", max_workers=1, shutdown_timeout=5)
    async def slow(job: Job) -> None:
        await gate.wait()
        first_done.append(job.payload)

    async with first.running():
        for i in range(20):
            await first.publish("handover", i)
        await wait_until(lambda: first.stats()[0].buffered == 19)
        gate.set()  # finish the one in hand; the 19 buffered are released at the stop
        await first.stop()
    second = ActionHub(bus_url, name="second")

    @second.action("handover")
    async def fast(job: Job) -> None:
        second_done.append(job.payload)

    async with second.running():
        started = trio.current_time()
        await wait_until(lambda: len(first_done) + len(second_done) == 20, timeout=10)
        assert trio.current_time() - started < 5
    assert sorted(first_done + second_done) == list(range(20))


async def test_redis_restart_mid_run_loses_nothing(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: set[int] = set()
    # a read whose reply the restart cut off leaves entries in this hub's pending list that it
    # never got: they come back through the visibility timeout, kept short here
    hub = ActionHub(redis_url + "&block=0.2&visibility_timeout=3")

    @hub.action("steady", max_workers=4)
    async def steady(job: Job) -> None:
        await trio.sleep(0.002)  # work in flight when the restart hits
        seen.add(job.payload)

    async def publish(numbers: range) -> None:
        for i in numbers:
            await hub.publish("steady", i)  # retried while Redis is down

    async with hub.running(), trio.open_nursery() as nursery:
        await publish(range(300))
        await wait_until(lambda: len(seen) > 20)
        nursery.start_soon(publish, range(300, 400))
        await trio.to_thread.run_sync(redis_server.restart)  # appendonly + fsync always: nothing lost
        await wait_until(lambda: len(seen) == 400, timeout=60)
    assert seen == set(range(400))
    logged = [r.getMessage() for r in caplog.records if r.name == "actionhub.redis"]
    assert any("redis unreachable" in line for line in logged)
    assert any("redis reachable again" in line for line in logged)


async def test_streams_are_trimmed_but_never_below_an_unacked_entry(bus_url: str) -> None:
    # entries younger than publish_timeout + 10 s are never trimmed (a resend looks for them)
    url = bus_url + "&trim_interval=0.2&publish_timeout=0.5"
    client = client_of(bus_url)
    release = trio.Event()
    done: list[int] = []
    hub = ActionHub(url)

    @hub.action("trimmed", max_workers=1)
    async def trimmed(job: Job) -> None:
        if job.payload == 0:
            await release.wait()  # the oldest entry stays unacked for a while
        done.append(job.payload)

    stream = keys_of(bus_url).stream("trimmed")
    async with hub.running():
        await hub.publish("trimmed", 0)
        await wait_until(lambda: hub.stats()[0].in_flight == 1)
        _publish_many(client, stream, 1499, start=1)  # 100 of them buffered (unacked), the rest unread
        await wait_until(lambda: hub.stats()[0].buffered == 100)
        await trio.sleep(1)  # five trim rounds while the oldest entry is unacked
        assert client.xlen(stream) == 1500  # nothing trimmed: every entry is unacked or undelivered
        first_id = client.xrange(stream, count=1)[0][0]
        release.set()
        await wait_until(lambda: len(done) == 1500)
        await wait_until(lambda: client.xlen(stream) < 300, timeout=30)  # trimmed once all are acked
    assert client.xpending(stream, "trimmed")["pending"] == 0
    assert first_id not in [entry_id for entry_id, _ in client.xrange(stream)]


async def test_trimming_forgets_consumers_that_hold_nothing_and_read_nothing(
    redis_url: str, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What killed hubs leave in XINFO CONSUMERS goes; a consumer holding an entry stays."""
    monkeypatch.setattr(redis_streams, "FORGET_CONSUMERS_AFTER", 0.3)
    stream = f"{prefix_of(redis_url)}tidy"
    client.xgroup_create(stream, "tidy", id="0", mkstream=True)
    first = client.xadd(stream, {"message": b'{"payload": 1}'})
    client.xreadgroup("tidy", "dead-empty", {stream: ">"}, count=1)
    client.xadd(stream, {"message": b'{"payload": 2}'})
    client.xreadgroup("tidy", "dead-holding", {stream: ">"}, count=1)
    client.xack(stream, "tidy", first)  # dead-empty holds nothing any more
    hub = ActionHub(redis_url + "&trim_interval=0.2")

    @hub.action("tidy")
    async def tidy(job: Job) -> None:
        pass

    def consumers() -> set[str]:
        return {c["name"].decode() for c in client.xinfo_consumers(stream, "tidy")}

    async with hub.running():
        await wait_until(lambda: "dead-empty" not in consumers(), timeout=10)
        assert "dead-holding" in consumers()


async def one_message_through(url: str) -> None:
    """A hub on ``url`` runs the action of a message it published itself."""
    got = trio.Event()
    hub = ActionHub(url)

    @hub.action("ping")
    async def ping(job: Job) -> None:
        got.set()

    async with hub.running():
        await hub.publish("ping", 1)
        with trio.fail_after(10):
            await got.wait()


async def test_acl_user_and_unix_socket_connections(redis_server: RedisServer, redis_url: str) -> None:
    prefix = prefix_of(redis_url)
    redis.Redis(port=redis_server.port).acl_setuser(
        "hubuser",
        enabled=True,
        passwords=["+s3cret"],
        keys=[f"{prefix}*"],
        channels=["*"],
        commands=["+@all"],
    )
    await one_message_through(f"redis://hubuser:s3cret@127.0.0.1:{redis_server.port}/0?prefix={prefix}")
    assert redis_server.unix_socket is not None
    await one_message_through(f"unix://{redis_server.unix_socket}?db=0&prefix={prefix}")
    with pytest.raises(BusError, match="redis refused connect"):  # checked, not retried; no group
        await one_message_through(f"redis://hubuser:wrong@127.0.0.1:{redis_server.port}/0?prefix={prefix}")


async def test_tls_connection(tmp_path: Path) -> None:
    server, ca_file = tls_redis(tmp_path)
    await trio.to_thread.run_sync(server.start)
    try:
        await one_message_through(
            f"rediss://127.0.0.1:{server.tls_port}/0?ssl_ca_certs={ca_file}&prefix=tls:"
        )
    finally:
        await trio.to_thread.run_sync(server.close)


async def test_publish_gives_up_with_bus_error_when_redis_stays_down() -> None:
    server = RedisServer(appendonly=False)
    await trio.to_thread.run_sync(server.start)
    try:
        hub = ActionHub(f"{server.url}?publish_timeout=0.5")
        async with hub.running():
            await trio.to_thread.run_sync(server.kill)
            started = trio.current_time()
            with pytest.raises(BusError, match="redis unreachable for publish"):
                await hub.publish("nowhere", 1)
            assert trio.current_time() - started >= 0.5
            await trio.to_thread.run_sync(server.start)  # back, so the hub can stop cleanly
    finally:
        await trio.to_thread.run_sync(server.close)


@pytest.mark.parametrize("how", ["plain", "dedupe", "delayed", "many"])
async def test_a_publish_redis_refuses_raises_a_bus_error_as_the_clients_do(how: str) -> None:
    """Out of memory (and any refusal retrying cannot mend) is a `BusError` naming the refusal,
    not redis-py's own exception."""
    with private_redis(appendonly=False, extra_args=("--maxmemory-policy", "noeviction")) as server:
        admin = redis.Redis.from_url(server.url)
        hub = ActionHub(server.url)
        async with hub.running():
            admin.config_set("maxmemory", 1)
            with pytest.raises(BusError, match="redis refused publish: command not allowed when used memory"):
                if how == "many":
                    await hub.publish_many("full", [1, 2])
                else:
                    dedupe_key = "k" if how == "dedupe" else None
                    await hub.publish("full", 1, dedupe_key=dedupe_key, delay=5 if how == "delayed" else None)
            admin.config_set("maxmemory", 0)


async def test_a_refused_announcement_is_logged_and_the_hub_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """Redis refusing the snapshot's SET (out of memory, say) costs a warning, not the hub: it
    goes on serving and announces again once Redis takes writes."""
    with private_redis() as server:
        admin = redis.Redis.from_url(server.url)
        hub = ActionHub(server.url, name="announcer", announce_interval=0.05)
        done: list[int] = []

        @hub.action("work")
        async def work(job: Job) -> None:
            done.append(job.payload)

        with caplog.at_level(logging.WARNING, logger="actionhub.hub"):
            async with hub.running():
                admin.config_set("maxmemory-policy", "noeviction")
                admin.config_set("maxmemory", 1)
                try:
                    await wait_until(lambda: "could not announce itself" in caplog.text)
                finally:
                    admin.config_set("maxmemory", 0)
                admin.delete(f"actionhub:hub:{hub.name}")
                await wait_until(lambda: admin.exists("actionhub:hub:announcer") == 1)
                await hub.publish("work", 1)
                await wait_until(lambda: done == [1])
        assert "redis refused announce: command not allowed when used memory" in caplog.text


async def test_keyed_dead_letters_requeue_into_their_partition_and_topic_info_counts_them(
    bus_url: str, on_bus: OnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the cluster layout a keyed letter goes back to a partition in another slot than the
    dead letters: written there first, then deleted (design §4); all such writes in one round
    trip, then all their deletes in one."""
    calls: list[tuple[str, int]] = []
    hub = ActionHub(bus_url)

    @hub.action("keyed", max_attempts=1)
    async def keyed(job: Job) -> None:
        calls.append((job.payload, job.attempt))
        if len(calls) <= 3:
            raise RuntimeError("not yet")

    async with hub.running():
        for n in range(3):
            await hub.publish("keyed", f"k{n}", key=f"customer-{n}")
        await hub.publish("keyed", "later", delay=60)
        await wait_until(lambda: on_bus.client.xlen(on_bus.keys.dead("keyed")) == 3)
        info = await hub.bus.topic_info("keyed")
        assert (info.dead_letters, info.delayed, info.length) == (3, 1, 3)
        bus: Any = hub.bus
        execute, round_trips = bus.execute, []

        async def counted(commands: Any, **kwargs: Any) -> Any:
            round_trips.append(kwargs.get("what"))
            return await execute(commands, **kwargs)

        monkeypatch.setattr(bus, "execute", counted)
        assert await hub.requeue_dead_letters("keyed") == 3
        monkeypatch.undo()
        dead = key_slot(on_bus.keys.dead("keyed"))
        targets = [await bus._partition_stream("keyed", f"customer-{n}") for n in range(3)]
        crossing = sum(key_slot(target) != dead for target in targets)
        expected = (
            0 if bus.writes_status else (crossing < 3) + 2 * (crossing > 0)
        )  # together; writes, deletes
        assert round_trips.count("requeue dead letters") == expected
        await wait_until(lambda: len(calls) == 6)
        assert await hub.dead_letters("keyed") == []
    assert sorted(calls[3:]) == [("k0", 1), ("k1", 1), ("k2", 1)]
    partitions = int(on_bus.client.get(on_bus.keys.partitions("keyed")))
    lengths = [on_bus.client.xlen(on_bus.keys.partition("keyed", p)) for p in range(partitions)]
    assert sum(lengths) == 6  # each back in its partition
