"""A done record is in Redis before its message's XACK, though the worker no longer waits for
it (the streams bus's acker sends the queued status writes first): seen from Redis itself (a
MONITOR connection), and through a moment when Redis refuses the writes (out of memory), which
loses neither a done record nor an ack, nor does a done write whose reply a cut connection lost."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import trio

from actionhub import ActionHub, Job
from actionhub.bus.redis import scripts
from actionhub.bus.redis.common import RedisBusBase
from actionhub.bus.redis.keys import Keys
from actionhub.testing import RedisServer
from tests.chaos.proxy import ChaosProxy
from tests.polling import wait_until

WRITE_STATUS_SHA = hashlib.sha1(scripts.WRITE_STATUS.encode()).hexdigest()


def _redis(url: str) -> tuple[redis.Redis, Keys]:
    return redis.Redis.from_url(url.split("?")[0]), Keys(url.split("prefix=")[1])


def _monitor(url: str, stop: str) -> list[str]:
    """Every command Redis runs, in the order it runs them, until ``ECHO stop`` (in a thread)."""
    client = redis.Redis.from_url(url.split("?")[0], socket_timeout=60)
    seen: list[str] = []
    with client.monitor() as monitor:
        for command in monitor.listen():
            text = str(command["command"])
            if text == f"ECHO {stop}":
                return seen
            seen.append(text)
    return seen


async def _entries(hub: ActionHub, topic: str) -> dict[str, str]:
    """message id -> its stream entry id."""
    return {message.id: entry for entry, message in await hub.bus.history(topic)}


@pytest.mark.parametrize("path", ["wire", "threads"])
async def test_each_done_record_reaches_redis_before_its_ack(
    redis_url: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "threads":  # as with TLS or a client the wire cannot copy: redis-py in threads
        monkeypatch.setattr(RedisBusBase, "new_wire", lambda self, slot=None: None)
    client, keys = _redis(redis_url)
    stop = f"stop-{uuid.uuid4().hex}"
    commands: list[str] = []
    hub = ActionHub(redis_url, name="acks")

    @hub.action("double", keep_result=60, min_workers=8, max_workers=8)
    async def double(job: Job) -> int:
        await trio.sleep(0.001 * (job.payload % 3))  # finishing out of order, in many ack rounds
        return int(job.payload) * 2

    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            commands.extend(await trio.to_thread.run_sync(_monitor, redis_url, stop))

        nursery.start_soon(watch)
        await wait_until(lambda: any("O" in c["flags"] for c in client.client_list()))
        async with hub.running():
            ids = [await hub.publish("double", n) for n in range(60)]
            for n, message_id in enumerate(ids):
                assert await hub.result(message_id, timeout=30) == 2 * n
            await wait_until(lambda: client.xpending(keys.stream("double"), "double")["pending"] == 0)
            entries = await _entries(hub, "double")
        client.echo(stop)

    assert len(entries) == 60
    for message_id, entry in entries.items():
        status_key = keys.status(message_id)
        done = [
            i
            for i, c in enumerate(commands)
            if c.startswith(f"EVALSHA {WRITE_STATUS_SHA}")
            and status_key in c.split()
            and '"state":"done"' in c
        ]
        acks = [i for i, c in enumerate(commands) if c.startswith("XACK") and entry in c.split()]
        assert done and acks, (message_id, entry)
        assert max(done) < min(acks), f"{message_id} ({entry}) was acked before its done record was written"


def _failures(caplog: pytest.LogCaptureFixture, what: str) -> int:
    return sum(
        1 for r in caplog.records if r.getMessage().startswith(what) and "OutOfMemoryError" in r.getMessage()
    )


@contextmanager
def _refusing_writes(client: redis.Redis) -> Iterator[None]:
    """Redis answers every write that may grow memory with an OOM error (an XACK still goes)."""
    before = client.config_get("maxmemory")["maxmemory"], client.config_get("maxmemory-policy")
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    try:
        yield
    finally:
        client.config_set("maxmemory", before[0])
        client.config_set("maxmemory-policy", before[1]["maxmemory-policy"])


async def test_done_records_that_redis_refuses_hold_back_their_acks_and_are_not_lost(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, keys = _redis(redis_url)
    hub = ActionHub(redis_url, name="refused", announce_interval=3600)  # an announce refused stops a hub
    release = trio.Event()
    started = finished = 0

    @hub.action("triple", keep_result=60, min_workers=5, max_workers=5)
    async def triple(job: Job) -> int:
        nonlocal started, finished
        started += 1
        await release.wait()
        finished += 1
        return int(job.payload) * 3

    stream = keys.stream("triple")
    async with hub.running():
        ids = [await hub.publish("triple", n) for n in range(5)]
        await wait_until(lambda: started == 5)
        await wait_until(lambda: all(b'"running"' in (client.get(keys.status(i)) or b"") for i in ids))
        with _refusing_writes(client):
            release.set()
            await wait_until(lambda: finished == 5)
            # the done writes were refused, and the acker's rounds failed with them (twice: the
            # second round had the first one's acks owed back) ...
            await wait_until(
                lambda: _failures(caplog, "writing") >= 2 and _failures(caplog, "acknowledging") >= 2
            )
            # ... so no ack went out: every entry still pending, every record still running
            assert client.xpending(stream, "triple")["pending"] == 5
            assert all(b'"running"' in (client.get(keys.status(i)) or b"") for i in ids)
        # Redis takes writes again: every done record lands, then every ack
        for n, message_id in enumerate(ids):
            assert await hub.result(message_id, timeout=30) == 3 * n
        await wait_until(lambda: client.xpending(stream, "triple")["pending"] == 0, timeout=30)
        assert [(await hub.status(i)).state for i in ids] == ["done"] * 5


def test_a_round_trip_sends_each_message_s_latest_write_only_and_a_failed_one_goes_first() -> None:
    from actionhub.bus.redis.results import _Batch

    def call(key: str, state: str) -> tuple[None, list[str], list[bytes | int]]:
        return None, [key, f"{key}:bell"], [state.encode(), 1000, 0]

    def sent(batch: _Batch) -> list[tuple[str, bytes | int]]:
        return [(keys[0], args[0]) for _, keys, args in batch.calls]

    failed = _Batch()
    for key, state in [("a", "running"), ("b", "running"), ("a", "done")]:
        failed.put(call(key, state))
    assert sent(failed) == [("a", b"done"), ("b", b"running")]  # a's running would be overwritten

    newer = _Batch()  # queued while the failed round trip was out
    for key, state in [("b", "retrying"), ("c", "running")]:
        newer.put(call(key, state))
    newer.put_before(failed.calls)
    # the failed writes go again, but never over a newer write of their message
    assert sent(newer) == [("a", b"done"), ("b", b"retrying"), ("c", b"running")]


async def test_a_done_write_whose_reply_is_lost_is_written_again_before_its_ack(
    redis_server: RedisServer, redis_url: str
) -> None:
    """The connection drops after Redis ran the round trip holding a done record, before its
    reply came: the hub cannot know it landed, so it sends it again, and only then the ack."""
    client, keys = _redis(redis_url)
    proxy = ChaosProxy(redis_server.port)
    stop = f"stop-{uuid.uuid4().hex}"
    commands: list[str] = []

    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)

        async def watch() -> None:
            commands.extend(await trio.to_thread.run_sync(_monitor, redis_url, stop))

        nursery.start_soon(watch)
        await wait_until(lambda: any("O" in c["flags"] for c in client.client_list()))
        hub = ActionHub(proxy.url() + "?prefix=" + redis_url.split("prefix=")[1], name="lossy")

        @hub.action("shout", keep_result=60)
        async def shout(job: Job) -> str:
            return str(job.payload).upper()  # the marker is in the done record only

        proxy.lose_reply_to(b"LOSE-THIS-REPLY")
        try:
            async with hub.running():
                ids = [await hub.publish("shout", word) for word in ("a", "lose-this-reply", "b")]
                assert [await hub.result(i, timeout=30) for i in ids] == ["A", "LOSE-THIS-REPLY", "B"]
                stream = keys.stream("shout")
                await wait_until(lambda: client.xpending(stream, "shout")["pending"] == 0)
                entries = await _entries(hub, "shout")
        finally:
            client.echo(stop)
        nursery.cancel_scope.cancel()

    assert proxy.replies_lost == 1
    lost = ids[1]
    writes = [
        i
        for i, c in enumerate(commands)
        if c.startswith(f"EVALSHA {WRITE_STATUS_SHA}") and keys.status(lost) in c.split() and "LOSE-THIS" in c
    ]
    acks = [i for i, c in enumerate(commands) if c.startswith("XACK") and entries[lost] in c.split()]
    assert len(writes) >= 2 and acks  # written, its reply lost, written again; acked
    assert writes[1] < acks[0], "acked before the done record whose reply was lost was written again"
    assert len(acks) == 1
