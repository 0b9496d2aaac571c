"""Moving due delayed messages to their streams or channels, in the cluster layout (design §3.3):
one delayed set per shard, each moved in two declared calls, `scripts_cluster.DUE` then
`scripts_cluster.MOVE_DUE_C` (which removes each member before writing it, so two hubs racing
never write one twice). A hub polls the sets of the shards its subscriptions read at up to 4 Hz,
and every set of the prefix every `SWEEP_EVERY` seconds (a delayed message for a topic no group
of this hub reads still moves, a little later). The single layout's one set: `scripts.MOVE_DUE`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

#: Members one DUE call returns, and one MOVE_DUE_C call moves.
DUE_BATCH = 500

#: Seconds between sweeps of every delayed set of the prefix.
SWEEP_EVERY = 5.0

#: Longest pause between two polls of the sets in use (seconds): at most 4 Hz.
POLL_EVERY = 0.25


def targets_of(members: Iterable[bytes]) -> list[str]:
    """The distinct targets (streams or channels) of delayed members (`delayed_member`), in order."""
    found: dict[str, None] = {}
    for member in members:
        found[orjson.loads(member)[1]] = None
    return list(found)


def move_calls(sets: Sequence[str], replies: Sequence[Any]) -> list[tuple[list[str], list[Any]]]:
    """The (KEYS, ARGV) of `MOVE_DUE_C` for each set of ``sets`` whose `DUE` reply (``replies``,
    in order) has members due."""
    calls: list[tuple[list[str], list[Any]]] = []
    for key, (_, *members) in zip(sets, replies, strict=True):
        if members:
            calls.append(([key, *targets_of(members)], list(members)))
    return calls


def pause(replies: Sequence[Any]) -> float:
    """Seconds to wait before the next poll, after `DUE` ``replies``: none if a set had a full
    batch due, else until the next member is due, at most `POLL_EVERY`, at least 5 ms."""
    if any(len(reply) > DUE_BATCH for reply in replies):
        return 0.0
    waits = [float(reply[0]) for reply in replies if float(reply[0]) >= 0]
    return POLL_EVERY if not waits else min(max(min(waits), 0.005), POLL_EVERY)
