"""``redis+cluster://``: the URL, the client it makes, and the guard against data laid out for
another layout under the same prefix."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.cluster
import trio

from actionhub import ActionHub, BusError, ConfigurationError, Job
from actionhub.bus.redis.cluster import parse_cluster_url, pipelined_on_cluster
from actionhub.bus.redis.layout import ClusterKeys
from actionhub.bus.redis.options import connect, is_transient, split_url
from actionhub.bus.url import open_bus, redact
from actionhub.client import Client
from actionhub.testing import RedisCluster, RedisServer, redis_command

# --------------------------------------------------------------------------- the URL


def test_the_url_names_seed_nodes_credentials_and_options() -> None:
    url = "redis+cluster://app:s%40cret@10.0.0.1:7000,node-b,[::1]:7002/0?socket_keepalive=true"
    parsed = parse_cluster_url(url)
    assert parsed.nodes == (("10.0.0.1", 7000), ("node-b", 6379), ("::1", 7002))
    assert parsed.connection == {"username": "app", "password": "s@cret", "socket_keepalive": True}
    assert parse_cluster_url("redis+cluster://h").connection == {}
    assert parse_cluster_url("rediss+cluster://h:7000?ssl_cert_reqs=none").connection == {
        "ssl": True,
        "ssl_cert_reqs": "none",
    }


def test_a_cluster_url_lays_keys_out_for_a_cluster_with_its_shards() -> None:
    _, options = split_url("redis+cluster://h1,h2?prefix=shop:&shards=256&block=0.5")
    assert (options.layout, options.shards, options.prefix, options.block) == ("cluster", 256, "shop:", 0.5)
    assert split_url("redis+cluster://h1")[1].layout == "cluster"
    assert split_url("redis://h/0")[1].layout == "single"
    assert split_url("redis://h/0?layout=cluster&shards=16")[1].shards == 16  # one node, laid out for many


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+cluster://", "names no node"),
        ("redis+cluster://h:99999", "bad cluster node address 'h:99999'"),
        ("redis+cluster://h/3", "database 0 only"),
        ("redis+cluster://h?layout=single", "layout=cluster only"),
        ("redis+cluster://h?shards=100", "power of two from 16 to 1024"),
        ("redis://h?shards=64", "cluster layout only"),
        ("redis+cluster://h?layout=sharded", "layout"),
        ("redis+cluster://h?shard=64", r"unknown option\(s\) \['shard'\]"),
    ],
)
def test_a_bad_url_is_a_configuration_error_that_says_why(url: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        redis_url, _ = split_url(url)
        parse_cluster_url(redis_url)


def test_the_password_is_redacted_from_urls_and_reprs() -> None:
    url = "redis+cluster://app:hunter2@h1:7000,h2:7001/0"
    assert "hunter2" not in redact(url)
    assert "hunter2" not in repr(parse_cluster_url(url))
    with pytest.raises(ConfigurationError) as caught:
        parse_cluster_url("redis+cluster://app:hunter2@h1:x")
    assert "hunter2" not in str(caught.value)


def test_what_a_cluster_in_transition_answers_is_an_outage_not_a_failure() -> None:
    for error in (
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        redis.exceptions.ClusterError("TTL exhausted."),
        redis.exceptions.SlotNotCoveredError("Command # 1 (XADD) requires a slot not covered"),
    ):
        assert is_transient(error), error
    assert not is_transient(redis.ResponseError("WRONGTYPE"))


def test_the_client_reaches_every_node_from_one_seed(redis_cluster: RedisCluster) -> None:
    redis_url, options = split_url(redis_cluster.url)
    client = connect(redis_url, options)
    try:
        assert isinstance(client, redis.cluster.RedisCluster)
        assert client.ping()
        (node,) = client.get_primaries()
        assert int(node.port) == redis_cluster.primaries()[0].port
    finally:
        client.close()


# --------------------------------------------------------------------------- the layout guard


async def test_a_bus_refuses_data_laid_out_otherwise_under_its_prefix(redis_server: RedisServer) -> None:
    url = f"{redis_server.url}?prefix=test-{uuid.uuid4().hex[:8]}:"
    async with open_bus(url).open("single", serving=False):
        pass  # the single layout writes nothing: every deployment so far has no record
    async with open_bus(f"{url}&layout=cluster&shards=32").open("cluster", serving=False):
        pass  # ... so a prefix may be laid out for a cluster once, recording it
    record = redis.Redis(port=redis_server.port).get(f"{split_url(url)[1].prefix}layout")
    assert record == ClusterKeys("p:", shards=32).layout_record.encode()
    for other, found in ((url, "'cluster:32:1'"), (f"{url}&layout=cluster&shards=64", "'cluster:32:1'")):
        with pytest.raises(ConfigurationError, match=f"laid out as {found}"):
            async with open_bus(other).open("other", serving=False):
                pass
    async with open_bus(f"{url}&layout=cluster&shards=32").open("again", serving=False):
        pass


async def test_a_hub_on_a_cluster_url_records_the_cluster_layout(redis_cluster: RedisCluster) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    hub = ActionHub(f"{redis_cluster.url}?prefix={prefix}")
    async with hub.running():
        pass
    node = redis_cluster.primaries()[0]
    assert redis.Redis(port=node.port).get(f"{prefix}layout") == b"cluster:64:1"
    refused = "laid out as 'cluster:64:1', this bus as 'cluster:16:1'"
    with trio.fail_after(10), pytest.raises(ConfigurationError, match=refused):
        async with ActionHub(f"{redis_cluster.url}?prefix={prefix}&shards=16").running():
            pass


async def test_the_readme_s_least_privilege_user_runs_a_hub_and_a_client_on_a_cluster(
    redis_cluster: RedisCluster,
) -> None:
    """The README's ACL line, with what it says a cluster adds: a hub's publish, retry, delayed
    message and dead letter, and a client's publish, leave ACL LOG empty."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (line,) = re.findall(r"^ACL SETUSER .*$", readme, re.MULTILINE)
    (extra,) = re.findall(r"On a \[cluster\]\(#redis-cluster\) add `([^`]+)`", readme)
    name = f"user{uuid.uuid4().hex[:6]}"
    port = redis_cluster.primaries()[0].port
    command = line.replace("ACL SETUSER actionhub", f"ACL SETUSER {name}").replace("<password>", "pw")
    assert redis_command(port, *command.split(), *extra.split()) == b"OK"
    redis_command(port, "ACL", "LOG", "RESET")
    url = redis_cluster.url.replace("redis+cluster://", f"redis+cluster://{name}:pw@") + "?prefix=actionhub:"
    hub = ActionHub(url)
    attempts: list[int] = []

    @hub.action("acl.work", max_attempts=2, retry_backoff=(0.1, 1, 0))
    async def work(job: Job) -> None:
        attempts.append(job.attempt)
        raise ValueError("always")

    async with hub.running():
        await hub.publish("acl.work", 1, delay=0.1)
        with trio.fail_after(10):
            while not await hub.dead_letters("acl.work"):  # noqa: ASYNC110 - the state is in Redis
                await trio.sleep(0.05)
        with Client(url) as client:
            client.publish("acl.work", 2)
    assert attempts[:2] == [1, 2]
    assert redis_command(port, "ACL", "LOG") == []


class _Pipeline:
    def __init__(self, sent: list[tuple[bool, list[tuple[Any, ...]]]], transaction: bool) -> None:
        self.queued: list[tuple[Any, ...]] = []
        sent.append((transaction, self.queued))

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute_command(self, *command: Any) -> None:
        self.queued.append(command)

    def execute(self) -> list[Any]:
        return [f"reply of {command[0]!r}" for command in self.queued]


def test_pipelined_on_a_cluster_runs_blocks_named_as_text_or_bytes_as_transactions() -> None:
    sent: list[tuple[bool, list[tuple[Any, ...]]]] = []
    client: Any = SimpleNamespace(pipeline=lambda transaction: _Pipeline(sent, transaction))
    commands = [("SET", "a", 1), (b"multi",), (b"INCR", "b"), (b"EXEC",), ("GET", "a")]
    replies = pipelined_on_cluster(client, commands)
    assert sent == [(False, [("SET", "a", 1)]), (True, [(b"INCR", "b")]), (False, [("GET", "a")])]
    assert replies == ["reply of 'SET'", b"OK", b"QUEUED", ["reply of b'INCR'"], "reply of 'GET'"]
    with pytest.raises(BusError, match="a MULTI without its EXEC"):
        pipelined_on_cluster(client, [("MULTI",), ("INCR", "b")])
