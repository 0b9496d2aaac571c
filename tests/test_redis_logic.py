"""Redis-shaped logic of the transports (URL options, the atomic scripts) on fakeredis: fast, and
precise about edge cases that are slow to set up on a live server. Every behaviour also has a test
against the real redis-server in test_redis_streams.py."""

from __future__ import annotations

import fakeredis
import orjson
import pytest
import redis
import trio

from actionhub import ConfigurationError
from actionhub.bus.redis.options import connect, split_url
from actionhub.bus.redis.streams import RedisStreamsBus


@pytest.fixture
def bus() -> RedisStreamsBus:
    url = "redis://localhost/0?prefix=p:"
    redis_url, options = split_url(url)
    return RedisStreamsBus(url, redis_url, options, client=fakeredis.FakeRedis())


def test_url_options_are_ours_the_rest_goes_to_redis_py() -> None:
    redis_url, options = split_url(
        "rediss://u:pw@h:6380/2?prefix=x:&visibility_timeout=12&mode=pubsub&ssl_cert_reqs=none"
    )
    assert redis_url == "rediss://u:pw@h:6380/2?ssl_cert_reqs=none"
    assert (options.prefix, options.visibility_timeout, options.mode) == ("x:", 12.0, "pubsub")
    assert split_url("unix:///run/redis.sock?db=1&block=0.5")[0] == "unix:///run/redis.sock?db=1"


def test_clients_speak_resp2_unless_the_url_asks_for_resp3() -> None:
    # redis-py 8 made RESP3 its default; our reply handling and the connect cost assume RESP2
    for url, protocol in (("redis://h/0", 2), ("redis://h/0?protocol=3", 3)):
        redis_url, options = split_url(url)
        client = connect(redis_url, options)
        assert int(client.connection_pool.connection_kwargs["protocol"]) == protocol


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("mode=queue", "mode"),
        ("visibility_timeout=soon", "bad value 'soon' for visibility_timeout"),
        ("visibility_timeout=0", "visibility_timeout must be a finite number > 0"),
        ("block=20", "block must be under half of visibility_timeout"),
        ("max_message_bytes=0", "max_message_bytes and max_dead_letters must be >= 1"),
        ("colour=blue", r"unknown option\(s\) \['colour'\]"),  # a typo fails now, not at connect time
    ],
)
def test_bad_url_options_are_configuration_errors(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        split_url(f"redis://localhost/0?{query}")


def _ids(client: fakeredis.FakeRedis, stream: str, count: int) -> list[bytes]:
    return [client.xadd(stream, {"message": b'{"payload": %d}' % i}) for i in range(count)]


def test_trim_keeps_everything_from_the_oldest_entry_any_group_still_needs(bus: RedisStreamsBus) -> None:
    client = bus.client
    ids = _ids(client, "p:t", 300)
    client.xgroup_create("p:t", "fast", id="0")
    client.xgroup_create("p:t", "slow", id="0")
    client.xreadgroup("fast", "c", {"p:t": ">"}, count=300)
    client.xack("p:t", "fast", *ids)  # fast is done with everything
    client.xreadgroup("slow", "c", {"p:t": ">"}, count=200)
    client.xack("p:t", "slow", *ids[:150], *ids[151:200])  # slow still holds entry 150, never read 200+
    trio.run(bus.trim, ["p:t"])
    remaining = [entry_id for entry_id, _ in client.xrange("p:t")]
    assert ids[150] in remaining and remaining == ids[ids.index(remaining[0]) :]  # a suffix, from <= 150

    client.xack("p:t", "slow", ids[150])  # now slow needs only what it has not read: from 199 on
    trio.run(bus.trim, ["p:t"])
    assert ids[199] in [entry_id for entry_id, _ in client.xrange("p:t")]


def test_trim_leaves_a_stream_without_groups_alone(bus: RedisStreamsBus) -> None:
    _ids(bus.client, "p:lonely", 50)
    assert trio.run(bus.trim, ["p:lonely"]) == 0
    assert bus.client.xlen("p:lonely") == 50


def test_due_messages_move_once_to_their_stream_and_group(bus: RedisStreamsBus) -> None:
    client = bus.client
    for delay, group, n in [(0, "", 1), (0, "g1", 2), (1000, "", 3)]:
        member = orjson.dumps(["x", "p:t", group, f'{{"payload": {n}}}'])
        bus._schedule(keys=[bus.keys.delayed], args=[delay, member])
    moved, wait = bus._move_due_script(keys=[bus.keys.delayed], args=[500])
    assert moved == 2 and 990 < float(wait) <= 1000
    entries = [fields for _, fields in client.xrange("p:t")]
    assert entries == [{b"message": b'{"payload": 1}'}, {b"message": b'{"payload": 2}', b"group": b"g1"}]
    assert bus._move_due_script(keys=[bus.keys.delayed], args=[500])[0] == 0  # moved once, not twice
    assert client.zcard(bus.keys.delayed) == 1


def test_renew_keeps_own_leases_and_reports_those_taken_by_another_hub(bus: RedisStreamsBus) -> None:
    client = bus.client
    ids = _ids(client, "p:t", 3)
    client.xgroup_create("p:t", "g", id="0")
    client.xreadgroup("g", "me", {"p:t": ">"}, count=3)
    client.xclaim("p:t", "g", "other", 0, [ids[1]])  # another hub took entry 1
    client.xack("p:t", "g", ids[2])  # entry 2 is done
    lost = bus._renew(keys=["p:t"], args=["g", "me", *ids])
    assert lost == [ids[1]]
    owners = {p["message_id"]: p["consumer"] for p in client.xpending_range("p:t", "g", "-", "+", 10)}
    assert owners == {ids[0]: b"me", ids[1]: b"other"}  # nothing stolen back, nothing revived


async def test_a_failing_background_step_is_logged_and_retried_never_fatal(
    bus: RedisStreamsBus, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []

    async def step() -> None:
        calls.append(trio.current_time())
        if len(calls) < 3:
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
        await trio.sleep_forever()

    with trio.move_on_after(60):
        await bus.keep_running("trimming", step)
    assert len(calls) == 3 and calls[1] > calls[0]  # retried after a pause
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["trimming failed"] * 2
