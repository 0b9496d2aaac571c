"""Reclaiming a consumer group's entries abandoned by dead or stalled hubs (idle past the
visibility timeout), on behalf of a `StreamSubscription`: fresh ones as a batch, suspects (an
entry already delivered more than once) in quarantine."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .options import text

if TYPE_CHECKING:
    from .subscription import StreamSubscription

log = logging.getLogger("actionhub.redis")


async def reclaim(sub: StreamSubscription, credit: int) -> bool:
    """Take over entries idle past the visibility timeout (their hub died). True if any.

    An entry on its first delivery was in a hub that died once: up to ``credit`` of them are
    taken as one batch, so the work of a crashed hub comes back at full speed. An entry
    delivered before was in a hub that died at least twice: it may be what kills them, so it
    runs in quarantine, alone, once what this group holds is settled and acked, and nothing
    else is read until it is settled. A message that kills every hub thus drags its
    bystanders into one extra delivery at most, and ends in the dead letters by itself."""
    bus = sub.bus
    options = bus.options
    if trio.current_time() < bus.reachable_since + options.visibility_timeout:
        return False  # after an outage, give every hub time to reconnect and renew its leases
    streams = tuple(sub.reclaimable())
    sub.read_in_progress = streams  # a hand-over waits for it, as for a read
    try:
        return await _reclaim_from(sub, streams, credit)
    finally:
        sub.read_in_progress = ()
        sub._read_ended.unpark_all()


async def _reclaim_from(sub: StreamSubscription, streams: tuple[str, ...], credit: int) -> bool:
    bus = sub.bus
    min_idle = int(bus.options.visibility_timeout * 1000)
    for stream in streams:
        in_hand = sub.in_hand.get(stream, set())

        def abandoned(stream: str = stream, in_hand: set[bytes] = in_hand) -> list[dict[str, Any]]:
            idle = bus.client.xpending_range(stream, sub.group, "-", "+", credit, idle=min_idle)
            # an entry of this hub's own whose renewal is late is still running here
            return [entry for entry in idle if entry["message_id"] not in in_hand]

        idle = await bus.call(abandoned, what=f"look for abandoned messages in {stream}")
        if idle:
            return await _take_abandoned(sub, stream, idle, min_idle)
    if sub._reclaimed:
        log.warning(
            "%s/%s: reclaimed %d message(s) left by a dead or stalled hub",
            sub.topic,
            sub.group,
            sub._reclaimed,
        )
        sub._reclaimed = 0
    return False


async def _take_abandoned(
    sub: StreamSubscription, stream: str, idle: list[dict[str, Any]], min_idle: int
) -> bool:
    bus = sub.bus
    fresh = [entry["message_id"] for entry in idle if entry["times_delivered"] <= 1]
    suspect = [entry["message_id"] for entry in idle if entry["times_delivered"] > 1][:1]
    ids = fresh or suspect
    # XCLAIM with the idle bound: an entry renewed or claimed by another hub meanwhile stays there
    claimed = await bus.call(
        lambda: bus.client.xclaim(stream, sub.group, bus.consumer, min_idle, ids),
        what=f"reclaim {stream}",
    )
    entries = [(entry_id, fields) for entry_id, fields in claimed if fields]
    if not entries:  # all taken by other hubs meanwhile
        return False
    if not sub.accepts(stream):  # the partition's lease was lost meanwhile
        await sub._give_back(stream, [entry_id for entry_id, _ in entries])
        return False
    sub._reclaimed += len(entries)
    deliveries = {entry["message_id"]: entry["times_delivered"] + 1 for entry in idle}
    if fresh:
        await sub._deliver(stream, entries, deliveries)
        return True
    for entry_id, _ in entries:
        log.info(
            "%s/%s: reclaimed %s in quarantine (delivery %d)",
            stream,
            sub.group,
            text(entry_id),
            deliveries[entry_id],
        )
    await sub._settle(None)
    await sub._deliver(stream, entries, deliveries)
    await sub._settle(None)
    return True
