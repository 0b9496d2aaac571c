"""What Redis holds for one topic (the dashboard's topic page), sans I/O: the `TOPIC_INFO`
script's keys and arguments, and its reply read as a `TopicInfo`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..base import ConsumerGroupInfo, TopicInfo
from .keys import Keys
from .slots import key_slot

#: the most delayed members (of every topic of the prefix) one look goes through: the script
#: runs in Redis, which serves nobody else meanwhile (10,000 members take about 5 ms)
DELAYED_LOOK = 10_000


def topic_info_call(
    keys: Keys, topic: str, partitions: int, *, pubsub: bool = False
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of `TOPIC_INFO` for ``topic`` with ``partitions`` partition streams."""
    main = keys.stream(topic)
    streams = [] if pubsub else [main, *(keys.partition(topic, p) for p in range(partitions))]
    # the start of a delayed member (`delayed_member`) for the main stream or channel, and for
    # any partition stream: the JSON of ["x", "<stream>", ...] up to the partition's number
    main_start = orjson.dumps(["p" if pubsub else "x", main])[:-1] + b","
    partition_start = orjson.dumps(["x", keys.partition(topic, 0)])[:-3] if partitions else b""
    arguments = [len(streams), DELAYED_LOOK, main_start, partition_start]
    return [*streams, keys.dead(topic), keys.delayed_of(main)], arguments


def topic_info_calls(
    keys: Keys, topic: str, partitions: int, *, pubsub: bool = False
) -> list[tuple[list[str], list[Any]]]:
    """The cluster layout: the keys and arguments of `scripts_cluster.TOPIC_INFO_SLOT` for each
    slot holding one of ``topic``'s streams (or its channel and dead letters): merge their replies
    with `merged`."""
    main = keys.stream(topic)
    streams = [] if pubsub else [main, *(keys.partition(topic, p) for p in range(partitions))]
    dead = keys.dead(topic)
    in_slot: dict[int, list[str]] = {key_slot(dead): []}  # the dead letters' slot is the topic's
    for stream in streams:
        in_slot.setdefault(key_slot(stream), []).append(stream)
    calls: list[tuple[list[str], list[Any]]] = []
    for slot, here in in_slot.items():
        # where each delayed member bound for a stream (or the channel) of this slot starts
        targets = here or [main]
        starts = [orjson.dumps(["p" if pubsub else "x", target])[:-1] + b"," for target in targets]
        with_dead = slot == key_slot(dead)
        calls.append(
            (
                [*here, *((dead,) if with_dead else ()), keys.delayed_of(targets[0])],
                [len(here), "1" if with_dead else "0", DELAYED_LOOK, *starts],
            )
        )
    return calls


def merged(replies: Sequence[bytes | str]) -> bytes:
    """The `TOPIC_INFO` document of a topic from its slots' `TOPIC_INFO_SLOT` ``replies``."""
    documents = [orjson.loads(reply) for reply in replies]
    next_due = [d["next_due"] for d in documents if d["next_due"] is not False]
    return orjson.dumps(
        {
            "streams": [stream for d in documents for stream in d["streams"] or ()],
            "dead": sum(d["dead"] for d in documents),
            "delayed": sum(d["delayed"] for d in documents),
            "due": sum(d["due"] for d in documents),
            "next_due": min(next_due) if next_due else False,
            "complete": all(d["complete"] for d in documents),
            "now": max(d["now"] for d in documents),
        }
    )


def topic_info_of(topic: str, partitions: int, reply: bytes | str) -> TopicInfo:
    """`TOPIC_INFO`'s reply for ``topic`` (or `merged`'s): its groups summed over the topic's streams."""
    document = orjson.loads(reply)
    now_ms = document["now"] * 1000
    length = 0
    groups: dict[str, list[Any]] = {}  # name -> [consumers, pending, lag, oldest pending id (ms)]
    for stream_length, stream_groups in document["streams"] or ():  # cjson writes {} for []
        length += stream_length
        for name, consumers, pending, lag, oldest in stream_groups or ():
            seen = groups.setdefault(name, [0, 0, 0, None])
            seen[0] = max(seen[0], consumers)  # an ordered group's hubs read every partition
            seen[1] += pending
            seen[2] = None if lag is False or seen[2] is None else seen[2] + lag
            if oldest:
                at = int(oldest.split("-")[0])
                seen[3] = at if seen[3] is None else min(seen[3], at)
    next_due = document["next_due"]
    return TopicInfo(
        topic=topic,
        length=length,
        partitions=partitions,
        groups=tuple(
            ConsumerGroupInfo(
                name=name,
                consumers=consumers,
                pending=pending,
                lag=lag,
                oldest_pending_age=None if oldest is None else max(now_ms - oldest, 0) / 1000,
            )
            for name, (consumers, pending, lag, oldest) in sorted(groups.items())
        ),
        delayed=document["delayed"],
        delayed_due=document["due"],
        next_due_in=None if next_due is False else float(next_due),
        dead_letters=document["dead"],
        delayed_complete=bool(document["complete"]),
    )


__all__: Sequence[str] = ["DELAYED_LOOK", "merged", "topic_info_call", "topic_info_calls", "topic_info_of"]
