"""The cluster key layout (docs/design/cluster.md §2-3), sans I/O: shard tags, and every set of
keys one script, transaction or multi-key command touches lands on one slot."""

from __future__ import annotations

import fnmatch
from collections import Counter

import pytest

from actionhub.bus.redis.keys import Keys
from actionhub.bus.redis.layout import (
    ClusterKeys,
    check_shards,
    keys_for,
    partition_shard,
    shard_tag,
    stride,
    topic_shard,
)
from actionhub.bus.redis.options import RedisOptions
from actionhub.bus.redis.slots import SLOTS, key_slot, slot_of
from actionhub.errors import ConfigurationError

TOPICS = ["orders", "a", "billing.invoices", "x/y@z+1=2-3:4", *(f"topic-{i}" for i in range(200))]
K = ClusterKeys("app:")
#: The slot ranges `redis-cli --cluster create` gives 3 primaries.
THREE_NODES = [(0, 5460), (5461, 10922), (10923, 16383)]


def node_of(slot: int) -> int:
    return next(i for i, (first, last) in enumerate(THREE_NODES) if first <= slot <= last)


def test_golden_vectors() -> None:
    """The plan's vectors (§3.1): other languages compute these names the same way."""
    assert [(shard_tag(k, 64), key_slot(shard_tag(k, 64))) for k in range(3)] == [
        ("0.178", 54),
        ("1.2", 365),
        ("2.303", 553),
    ]
    keys = ClusterKeys()
    assert topic_shard("orders", 64) == 46
    assert (keys.stream("orders"), keys.slot_of(keys.stream("orders"))) == ("actionhub:{46.343}orders", 11974)
    assert [(keys.partition("orders", p), keys.slot_of(keys.partition("orders", p))) for p in range(3)] == [
        ("actionhub:{21.73}orders:p0", 5573),
        ("actionhub:{60.50}orders:p1", 15478),
        ("actionhub:{35.50}orders:p2", 9060),
    ]
    assert keys.keyed_stream("orders", "customer-7", 16) == keys.partition("orders", 8)
    assert keys.status("m-1") == "actionhub:{#m-1}status"
    assert keys.layout_record == "cluster:64:1" and keys.layout == "actionhub:layout"


@pytest.mark.parametrize("shards", [16, 64, 1024])
def test_each_shard_tag_lies_in_its_share_of_the_slot_ring(shards: int) -> None:
    width = SLOTS // shards
    assert [key_slot(shard_tag(k, shards)) // width for k in range(shards)] == list(range(shards))


@pytest.mark.parametrize("shards", [16, 64, 256, 1024])
def test_shards_spread_evenly_over_three_nodes(shards: int) -> None:
    counts = Counter(node_of(key_slot(shard_tag(k, shards))) for k in range(shards))
    assert max(counts.values()) - min(counts.values()) <= 2, counts


def test_stride_reaches_every_shard_once() -> None:
    assert [stride(s) for s in (16, 64, 1024)] == [9, 39, 633]
    for shards in (16, 64, 1024):
        assert len({partition_shard("orders", p, shards) for p in range(shards)}) == shards


def test_a_keyed_topics_partitions_spread_over_nodes() -> None:
    for topic in TOPICS:
        for partitions in (8, 16, 32, 64):
            counts = Counter(node_of(K.slot_of(K.partition(topic, p))) for p in range(partitions))
            spread = max(counts.values()) - min(counts.get(node, 0) for node in range(3))
            assert spread <= (1 if partitions == 64 else 3), (topic, partitions, counts)


def test_cluster_names_are_the_single_names_tagged_after_the_prefix() -> None:
    """Nothing but a tag is added: a name stays readable, and no two single names collide."""
    single = Keys("app:")
    for name, args in [
        ("stream", ("orders",)),
        ("partition", ("orders", 3)),
        ("partitions", ("orders",)),
        ("dead", ("orders",)),
        ("progress", ("orders", "g{1}", "m}1")),
        ("members", ("orders", "g")),
        ("lease", ("orders", "g", 3)),
        ("keeps_results", ("orders",)),
        ("results_group", ("orders",)),
        ("dedupe", ("orders", "k{x}")),
        ("limit_reply", ("orders", "g", "hub")),
        ("durable_mark", ("orders",)),
    ]:
        tagged = getattr(K, name)(*args)
        tag = K.tag_of(tagged)
        assert tagged == f"app:{{{tag}}}" + getattr(single, name)(*args)[len("app:") :], name
    assert K.schedule("nightly", topic="orders") == K.stream("orders").replace("}orders", "}schedule:nightly")
    assert K.doorbell("hub@h:1:hot", near=K.partition("orders", 2)) == K.partition("orders", 2).replace(
        "}orders:p2", "}doorbell:hub@h:1:hot"
    )
    assert all(
        a.endswith(b[len("app:") :]) for a, b in zip(K.limits("t", "g"), single.limits("t", "g"), strict=True)
    )
    # untagged: used alone
    for name in ("reply_prefix", "hubs", "control", "layout"):
        assert getattr(K, name) == getattr(single, name)
    assert K.hub("h") == single.hub("h") and K.events("escalations") == single.events("escalations")


def test_every_key_of_a_topic_shares_its_streams_slot() -> None:
    for topic in TOPICS:
        names = [
            K.stream(topic),
            K.partitions(topic),
            K.dead(topic),
            K.delayed_of(K.stream(topic)),
            K.progress(topic, "g", "m-1"),
            K.members(topic, "g"),
            *(K.lease(topic, "g", p) for p in range(64)),
            K.keeps_results(topic),
            K.results_group(topic),
            *K.limits(topic, "g"),
            K.limit_reply(topic, "g", "hub"),
            K.schedule("s{1}", topic=topic),
            K.dedupe(topic, "k}"),
            K.doorbell("hub", near=K.stream(topic)),
            K.durable_mark(topic),
        ]
        assert len({key_slot(name) for name in names}) == 1, topic


Command = tuple[str | int, ...]


def operations(topic: str, message_id: str) -> dict[str, list[list[Command]]]:
    """The plan's inventory (§2.2-2.3) of what touches several keys at once: for each, the
    operations the cluster transport will send for one topic and message, each a list of the
    commands that must share a slot (a script call, a MULTI block, a multi-key command)."""
    stream, partition = K.stream(topic), K.partition(topic, 5)

    def script(*keys: str) -> list[Command]:
        return [("EVALSHA", "0" * 40, len(keys), *keys, "arg")]

    def mark(key: str) -> Command:
        return ("SET", key, "1", "PX", 60_000)

    return {
        "SCHEDULE (retry)": [
            script(K.delayed_of(stream), stream),
            script(K.delayed_of(partition), partition),
        ],
        "PUBLISH_ONCE_C": [
            script(stream, K.dedupe(topic, "k"), K.delayed_of(stream)),
            script(partition, K.dedupe(topic, "k", target=partition), K.delayed_of(partition)),
        ],
        "durable publish (a script, its mark, WAIT: one connection, so one node)": [
            [*script(stream, K.dedupe(topic, "k"), K.delayed_of(stream)), mark(K.durable_mark(topic))],
            [
                *script(partition, K.dedupe(topic, "k", target=partition), K.delayed_of(partition)),
                mark(K.durable_mark(topic, target=partition)),
            ],
        ],
        "CLAIM_LEASES / RELEASE_LEASES": [script(*(K.lease(topic, "g", p) for p in range(64)))],
        "WRITE_STATUS": [script(K.status(message_id), K.status_bell(message_id))],
        "FIRE_TICKS": [script(K.schedule("nightly", topic=topic), stream)],
        "LIMIT": [script(*K.limits(topic, "g"), K.limit_reply(topic, "g", "hub"))],
        "requeue of an unkeyed dead letter (MULTI)": [
            [("MULTI",), ("XADD", stream, "*", "message", "m"), ("XDEL", K.dead(topic), "1-1"), ("EXEC",)]
        ],
        "dead letter of a main-stream entry (MULTI)": [
            [
                ("MULTI",),
                ("XADD", K.dead(topic), "*", "message", "m"),
                ("XACK", stream, "g", "1-1"),
                ("EXEC",),
            ]
        ],
        "partition count (SET NX + MGET)": [
            [("SET", K.partitions(topic), 16, "NX"), ("MGET", K.partitions(topic))]
        ],
        "reader tier (XREAD with its doorbell)": [
            [("XREAD", "BLOCK", 1000, "STREAMS", partition, K.doorbell("hub:5", near=partition), "$", "$")]
        ],
        "blocking read for one group (XREADGROUP with its doorbell)": [
            [
                (
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "BLOCK",
                    1000,
                    "STREAMS",
                    stream,
                    K.doorbell("h:1", near=stream),
                    ">",
                    ">",
                )
            ]
        ],
    }


@pytest.mark.parametrize("message_id", ["m-1", "01J9ZQ5V", "}starts-with-brace", "", "a}b{c}", "{tag}"])
def test_each_multi_key_operation_stays_on_one_slot(message_id: str) -> None:
    for topic in TOPICS:
        for name, ops in operations(topic, message_id).items():
            for commands in ops:
                assert slot_of(*commands) is not None, name  # a BusError if the keys spanned slots


def test_due_messages_move_with_their_delayed_set() -> None:
    """MOVE_DUE_C declares a delayed set and the targets of its members: one slot."""
    by_set: dict[str, set[str]] = {}
    for topic in TOPICS:
        for target in (K.stream(topic), *(K.partition(topic, p) for p in range(16))):
            by_set.setdefault(K.delayed_of(target), set()).add(target)
    assert set(by_set) <= set(K.delayed_sets()) and len(K.delayed_sets()) == 64
    for delayed, targets in by_set.items():
        assert len({key_slot(key) for key in (delayed, *targets)}) == 1


def test_schedules_are_found_and_named_back() -> None:
    for name in ("nightly", "a:b", "x{y}z", "}", "{"):
        key = K.schedule(name, topic="orders")
        assert fnmatch.fnmatchcase(key, K.schedules) and K.schedule_name(key) == name
    assert not fnmatch.fnmatchcase(K.hub("h"), K.schedules)


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="delayed_of"):
        _ = K.delayed
    with pytest.raises(ValueError, match="topic"):
        K.schedule("nightly")
    with pytest.raises(ValueError, match="doorbell"):
        K.doorbell("hub")
    with pytest.raises(ValueError, match="mark"):
        K.durable_mark()
    with pytest.raises(ValueError, match="not a hash-tagged key"):
        K.delayed_of("app:orders")
    with pytest.raises(ValueError, match="not a hash-tagged key"):
        K.tag_of("app:{}orders")
    with pytest.raises(ConfigurationError, match="brace"):
        ClusterKeys("app{1}:")
    for shards in (8, 48, 2048, True):
        with pytest.raises(ConfigurationError, match="power of two"):
            check_shards(shards)


def test_keys_for_chooses_the_layout() -> None:
    assert keys_for(RedisOptions(prefix="p:")) == Keys("p:")
    assert keys_for(RedisOptions(prefix="p:", layout="cluster")) == ClusterKeys("p:", shards=64)
    assert keys_for(RedisOptions(layout="cluster", shards=256)) == ClusterKeys(shards=256)
    with pytest.raises(ConfigurationError, match="cluster layout only"):
        RedisOptions(shards=64)
    with pytest.raises(ConfigurationError, match="power of two"):
        RedisOptions(layout="cluster", shards=100)
    with pytest.raises(ValueError, match="layout"):
        RedisOptions(layout="sharded")
