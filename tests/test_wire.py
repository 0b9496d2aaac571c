"""`WireConnection`, the trio-driven Redis connection of the hot path, against a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import fakeredis
import pytest
import redis
import trio
import trio.testing

from actionhub.bus.redis.options import connect, split_url
from actionhub.bus.redis.wire import WireConnection, WireParams, wire_params
from actionhub.testing import RedisServer
from tests.polling import wait_until


def params_of(url: str) -> WireParams | None:
    return wire_params(connect(*split_url(url)))


def test_only_connections_it_can_reproduce_take_the_wire() -> None:
    tcp = params_of("redis://u:pw@h:6380/3?client_name=hub&prefix=x:")
    assert tcp == WireParams("h", 6380, None, 3, "u", "pw", "hub", timeout=11.0, connect_timeout=5.0)
    unix = params_of("unix:///run/redis.sock?db=2")
    assert unix is not None and (unix.host, unix.path, unix.db) == (None, "/run/redis.sock", 2)
    # TLS, RESP3, options that change replies, and test doubles keep redis-py's thread path
    for url in ("rediss://h/0", "redis://h/0?protocol=3", "redis://h/0?decode_responses=True"):
        assert params_of(url) is None, url
    assert wire_params(fakeredis.FakeRedis()) is None


@pytest.fixture
async def wire(redis_server: RedisServer) -> AsyncIterator[WireConnection]:
    params = params_of(f"redis://127.0.0.1:{redis_server.port}/5")
    assert params is not None
    async with trio.open_nursery() as nursery:
        connection = WireConnection(params, nursery)
        yield connection
        connection.close()


async def test_concurrent_callers_share_the_connection_and_each_gets_its_own_replies(
    wire: WireConnection, redis_server: RedisServer
) -> None:
    await wire.execute(("DEL", "wire:n"))
    got: dict[int, list[Any]] = {}

    async def caller(i: int) -> None:
        got[i] = await wire.execute(("ECHO", f"e{i}"), ("INCR", "wire:n"))

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(caller, i)
    assert all(replies[0] == f"e{i}".encode() for i, replies in got.items())
    assert sorted(replies[1] for replies in got.values()) == list(range(1, 201))
    sync = redis.Redis(port=redis_server.port, db=5)  # SELECT 5 was part of the handshake
    assert sync.get("wire:n") == b"200"
    others = [c for c in sync.client_list() if c["db"] == "5" and c["cmd"] != "client|list"]
    assert len(others) == 1  # 200 concurrent callers, one connection


async def test_an_error_reply_is_redis_py_s_exception_and_the_connection_lives_on(
    wire: WireConnection,
) -> None:
    await wire.execute(("SET", "wire:s", "text"))
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await wire.execute(("ECHO", "before"), ("LPUSH", "wire:s", "x"))
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        await wire.execute(("XREADGROUP", "GROUP", "nope", "c", "STREAMS", "wire:none", ">"))
    assert await wire.execute(("GET", "wire:s")) == [b"text"]


async def test_a_killed_connection_fails_its_callers_then_reconnects(
    wire: WireConnection, redis_server: RedisServer
) -> None:
    (client_id,) = await wire.execute(("CLIENT", "ID"))
    sync = redis.Redis(port=redis_server.port)

    def blocked() -> bool:
        return any(c["id"] == str(client_id) and c["cmd"] == "blpop" for c in sync.client_list())

    async def blpop() -> None:
        with pytest.raises(redis.ConnectionError):
            await wire.execute(("BLPOP", "wire:never", 30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blpop)
        await wait_until(blocked)
        sync.execute_command("CLIENT", "KILL", "ID", client_id)
    (new_id,) = await wire.execute(("CLIENT", "ID"))
    assert new_id != client_id


async def test_silence_past_the_timeout_is_a_timeout_error(
    wire: WireConnection, mock_clock: trio.testing.MockClock
) -> None:
    # jump only once nothing happened for 50 ms of real time: connecting to Redis is real I/O,
    # which an immediate jump would time out
    mock_clock.autojump_threshold = 0.05
    with pytest.raises(redis.TimeoutError):
        await wire.execute(("BLPOP", "wire:never", 0), timeout=30)
    assert await wire.execute(("PING",)) == [b"PONG"]  # on a fresh connection


async def test_a_wrong_password_is_an_authentication_error(redis_server: RedisServer) -> None:
    redis.Redis(port=redis_server.port).acl_setuser(
        "wireuser", enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"]
    )
    for password, outcome in (("right", None), ("wrong", redis.AuthenticationError)):
        params = params_of(f"redis://wireuser:{password}@127.0.0.1:{redis_server.port}/0")
        assert params is not None
        async with trio.open_nursery() as nursery:
            connection = WireConnection(params, nursery)
            if outcome is None:
                assert await connection.execute(("ACL", "WHOAMI")) == [b"wireuser"]
            else:
                with pytest.raises(outcome):
                    await connection.execute(("PING",))
            connection.close()


async def test_unix_socket(redis_server: RedisServer) -> None:
    params = params_of(f"unix://{redis_server.unix_socket}")
    assert params is not None
    async with trio.open_nursery() as nursery:
        connection = WireConnection(params, nursery)
        assert await connection.execute(("PING",)) == [b"PONG"]
        connection.close()


async def test_nothing_listening_is_a_connection_error(redis_server: RedisServer) -> None:
    params = params_of("redis://127.0.0.1:1/0")
    assert params is not None
    async with trio.open_nursery() as nursery:
        with pytest.raises(redis.ConnectionError):
            await WireConnection(params, nursery).execute(("PING",))


async def test_a_reply_nobody_asked_for_drops_the_connection() -> None:
    connections = 0

    async def talkative_server(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        while await stream.receive_some(1024):
            await stream.send_all(b"+PONG\r\n+SURPRISE\r\n")

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, talkative_server, 0, host="127.0.0.1"))
        params = params_of(f"redis://127.0.0.1:{listener.socket.getsockname()[1]}/0")
        assert params is not None
        wire = WireConnection(params, nursery)
        assert await wire.execute(("PING",)) == [b"PONG"]
        assert await wire.execute(("PING",)) == [b"PONG"]  # on a new connection: the old one lied
        assert connections == 2
        nursery.cancel_scope.cancel()
