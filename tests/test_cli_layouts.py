"""``actionhub`` on both key layouts (`bus_url`): ``keys`` names a topic's keys as the hubs and
clients lay them out, and the commands work on a ``redis+cluster://`` URL (``stats`` and the
controls: tests/test_clients.py's hubs and commands, which they call)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from actionhub.bus.redis.entries import dead_letter_fields
from actionhub.bus.redis.layout import keys_for
from actionhub.bus.redis.options import connect, split_url
from actionhub.client import Client
from actionhub.message import Message
from tests.test_cli import cli

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


async def test_keys_names_a_topic_s_keys_offline_in_either_layout() -> None:
    # the golden vectors of docs/design/cluster.md §3.1 (64 shards): nothing is read
    cluster = await cli(
        "keys", "orders", "--key", "a", "--partitions", "3", "--bus", "redis+cluster://127.0.0.1:1/0"
    )
    lines = dict(
        line.split(maxsplit=1)
        for line in cluster.stdout.decode().replace("key delayed", "key_delayed").splitlines()
    )
    assert lines["stream"] == "actionhub:{46.343}orders"
    assert lines["dead"] == "actionhub:{46.343}dead:orders"
    assert [lines[f"p{p}"] for p in range(3)] == [
        "actionhub:{21.73}orders:p0",
        "actionhub:{60.50}orders:p1",
        "actionhub:{35.50}orders:p2",
    ]
    assert lines["key"] == "actionhub:{21.73}orders:p0" and lines["key_delayed"] == "actionhub:{21.73}delayed"
    single = await cli(
        "keys", "orders", "--partitions", "2", "--json", "--bus", "redis://127.0.0.1:1/0?prefix=p:"
    )
    assert orjson.loads(single.stdout) == {
        "stream": "p:orders",
        "dead": "p:dead:orders",
        "partitions": "p:partitions:orders",
        "delayed": "p:delayed",
        "p0": "p:orders:p0",
        "p1": "p:orders:p1",
    }


async def test_keys_reads_the_partition_count_and_the_commands_work(bus_url: str) -> None:
    with Client(bus_url) as client:
        client.publish("orders", 1, key="a")  # sets the topic's partition count (16)
        names = client.key_names("orders", "a")
    found = orjson.loads((await cli("keys", "orders", "--key", "a", "--json", "--bus", bus_url)).stdout)
    assert found == dict(names) and len([what for what in found if what.startswith("p")]) == 17
    redis_url, options = split_url(bus_url)
    raw: Any = connect(redis_url, options)
    try:
        assert raw.xlen(found["key"]) == 1  # the name it printed is where the message went
        keys = keys_for(options)
        fields = dead_letter_fields(
            Message("fail", "poison", id="m-1").encode(), topic="fail", group="g", reason="failed",
            attempts=1, error="boom", traceback=None,
        )  # fmt: skip
        raw.xadd(keys.dead("fail"), fields)
    finally:
        raw.close()
    (letter,) = orjson.loads((await cli("dead-letters", "list", "fail", "--json", "--bus", bus_url)).stdout)
    assert letter["message"]["payload"] == "poison"
    assert (
        await cli("dead-letters", "requeue", "fail", "--bus", bus_url)
    ).stdout == b"requeued 1 dead letter(s) of fail\n"
    published = await cli("publish", "record", '{"n": 1}', "--dedupe-key", "once", "--bus", bus_url)
    status = await cli("status", published.stdout.decode().strip(), "--bus", bus_url)
    assert b" unknown" in status.stdout  # no group keeps its results
    # through the hub's bus, not a client: the topic's history
    (line,) = (await cli("replay", "record", "--bus", bus_url)).stdout.decode().splitlines()
    assert orjson.loads(line)["message"]["id"] == published.stdout.decode().strip()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["keys", "bad topic"], "invalid topic"),
        (["keys", "orders", "--partitions", "0"], "--partitions must be at least 1"),
        (["keys", "orders", "--key", "", "--partitions", "2"], "key must be"),
        (["keys", "orders", "--bus", "redis+cluster:///0"], "bad bus URL"),
    ],
)
async def test_keys_misuse_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = await cli(*args, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert says in line
