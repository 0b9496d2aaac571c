"""Schedules on Redis: the keys, arguments and reply of `scripts.FIRE_TICKS` (sans I/O), and the
two calls a Redis bus makes with them. One script call per firing: every hub offers the same
ticks and Redis, on its own clock, publishes each once (see actionhub/bus/ticks.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from ...errors import ConfigurationError
from ..ticks import ScheduleState, Tick, TicksFired
from . import scripts
from .keys import Keys
from .layout import ClusterKeys

if TYPE_CHECKING:
    from .common import RedisBusBase


def fire_ticks_call(
    keys: Keys,
    *,
    schedule: str,
    digest: str,
    catch_up: str,
    kind: str,
    ticks: Sequence[tuple[Tick, bytes]],
    topic: str | None = None,
) -> tuple[list[str], list[str | bytes | int]]:
    """(KEYS, ARGV) of `FIRE_TICKS` for ``ticks`` (each with its encoded envelope), oldest first,
    to stream (kind ``x``) or channel (``p``) of their topic. ``topic``: the schedule's (else its
    ticks'), which the cluster layout needs even with no ticks: the state is in its slot."""
    if ticks:
        topic = ticks[0][0].message.topic
    args: list[str | bytes | int] = [digest, catch_up, kind]
    for tick, raw in ticks:
        args += [tick.at, "1" if tick.overdue else "0", raw]
    try:
        state = keys.schedule(schedule, topic=topic)
    except ValueError:
        raise ConfigurationError(
            f"schedule {schedule!r}: the cluster layout keeps its state in its topic's slot, so "
            "reading it needs the topic (fire_ticks(..., topic=))"
        ) from None
    return [state, keys.stream(topic) if topic else state], args


def fired_of(reply: Sequence[Any]) -> TicksFired:
    """The `TicksFired` of a `FIRE_TICKS` reply."""
    last, now, fresh, early, *published = (int(value) for value in reply)
    return TicksFired(tuple(published), last, now / 1000, bool(fresh), early)


async def fire_ticks(
    bus: RedisBusBase,
    schedule: str,
    digest: str,
    catch_up: str,
    ticks: Sequence[Tick],
    *,
    topic: str | None = None,
) -> TicksFired:
    """Run `FIRE_TICKS` (streams: XADD; pub/sub: PUBLISH), within the bus's publish timeout."""
    kind = "x" if bus.durable else "p"  # the durable Redis transport is the streams one
    keys, args = fire_ticks_call(
        bus.keys,
        schedule=schedule,
        digest=digest,
        catch_up=catch_up,
        kind=kind,
        ticks=[(tick, bus.encode(tick.message)) for tick in ticks],
        topic=topic,
    )
    script = bus.client.register_script(scripts.FIRE_TICKS)  # once a tick: hashing it is cheap
    what = f"fire schedule {schedule}"
    confirm = bus.confirm(ticks[0].message.topic, target=keys[1]) if ticks else None
    if confirm is not None:  # ticks publish: confirmed as publishes are, the call sent again if not
        return fired_of(await bus.send_once(script, lambda _: (keys, args), what=what, confirm=confirm))
    (reply,) = await bus.run_scripts(
        [(script, keys, args)], what=what, deadline=trio.current_time() + bus.options.publish_timeout
    )
    return fired_of(reply)


async def schedule_states(bus: RedisBusBase, names: Sequence[str] | None) -> dict[str, ScheduleState]:
    """The state of each of the schedules ``names`` (None: every one, found by SCAN) that has one."""
    if isinstance(bus.keys, ClusterKeys):
        return await _cluster_states(bus, names)
    if names is None:
        pattern, start = bus.keys.schedule("*"), len(bus.keys.schedule(""))

        def scan() -> list[str]:
            found = bus.client.scan_iter(match=pattern, count=1000, _type="string")
            return sorted(key.decode()[start:] for key in found)

        names = await bus.call(scan, what="list schedules")
    if not names:
        return {}
    keys = [bus.keys.schedule(name) for name in names]
    (values,) = await bus.execute([("MGET", *keys)], what="read schedules")
    return {name: state_of(raw) for name, raw in zip(names, values, strict=True) if raw is not None}


async def _cluster_states(bus: RedisBusBase, names: Sequence[str] | None) -> dict[str, ScheduleState]:
    """`schedule_states` in the cluster layout: each state is in its topic's slot, which a name
    does not tell, so SCAN every primary (redis-py's `scan_iter` does) for every state, then one
    MGET per key (they are in many slots)."""
    keys = bus.keys

    def scan() -> list[str]:
        found = bus.client.scan_iter(match=keys.schedules, count=1000, _type="string")
        return sorted(key.decode() for key in found)

    found = await bus.call(scan, what="list schedules")
    wanted = None if names is None else set(names)
    found = [key for key in found if wanted is None or keys.schedule_name(key) in wanted]
    replies = await bus.execute([("MGET", key) for key in found], what="read schedules")
    states = {keys.schedule_name(key): raw for key, (raw,) in zip(found, replies, strict=True)}
    return {name: state_of(raw) for name, raw in sorted(states.items()) if raw is not None}


def state_of(raw: bytes) -> ScheduleState:
    """A schedule's stored state, ``<digest>:<last>:<fired>`` (see `scripts.FIRE_TICKS`)."""
    digest, last, fired = raw.decode().split(":")
    return ScheduleState(digest, int(last), int(fired) if fired else None)
