"""Hubs killed with SIGKILL at random moments, and hubs stopped with SIGTERM under load."""

from __future__ import annotations

import random
import signal
import statistics

import pytest
import trio

from actionhub.testing import RedisServer
from tests.chaos.conftest import Figures, bus_url, scaled
from tests.chaos.harness import Hubs, Ledger, RedisView, wait_for

VISIBILITY_TIMEOUT = 3.0


async def test_hub_killed(chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures) -> None:
    """Three hubs share a stream while one of them is SIGKILLed at a random moment, again and
    again, and replaced. Every message finishes; only messages the dead hub held run twice; nothing
    stays pending; the dead hub's messages are finished within visibility_timeout + 2 s."""
    total = scaled(6_000, 50_000)
    kills = scaled(3, 12)
    work, workers, live = 0.02, 10, 3
    seconds = total * work / (workers * live)  # how long the hubs take, without kills
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    url = bus_url(chaos_redis.url, visibility_timeout=VISIBILITY_TIMEOUT)
    options = ("--work", str(work), "--workers", str(workers), "--buffer", "50")
    await view.publish(range(total))
    alive = [await hubs.start(f"hub-{n}", *options, url=url) for n in range(live)]
    held_at_kills: set[int] = set()
    recoveries: list[float] = []

    async def watch_recovery(consumer: str, held: set[bytes], killed_at: float) -> None:
        async def finished() -> bool:
            return not (await view.pending_ids(consumer)) and not await view.still_pending(held)

        await wait_for(finished, timeout=VISIBILITY_TIMEOUT + 30, what=f"{consumer}'s messages")
        recoveries.append(trio.current_time() - killed_at)

    async with trio.open_nursery() as nursery:
        for n in range(kills):
            await trio.sleep(rng.uniform(0.2, 1.0) * seconds / kills)
            victim = alive.pop(rng.randrange(len(alive)))
            victim.kill()
            killed_at = trio.current_time()
            consumer = await view.consumer_of(victim.pid)
            held = await view.pending_ids(consumer)
            held_at_kills |= await view.payload_ids(held)
            if held:
                nursery.start_soon(watch_recovery, consumer, held, killed_at)
            alive.append(await hubs.start(f"replacement-{n}", *options, url=url))

    async def all_done() -> bool:
        return not Ledger.read(hubs.outputs()).missing(range(total))

    await wait_for(all_done, timeout=120, what="every message to finish")
    await wait_for(lambda: view.settled(), timeout=VISIBILITY_TIMEOUT + 30, what="no pending entries")
    ledger = Ledger.read(hubs.outputs())
    duplicated = ledger.duplicated()
    assert not ledger.missing(range(total))
    assert set(duplicated) <= held_at_kills, "a message ran twice that no dead hub held"
    assert all(count == 2 for count in duplicated.values())
    assert await view.dead_letters() == []
    assert max(recoveries) <= VISIBILITY_TIMEOUT + 2
    figures["seed"] = seed
    figures["messages"] = total
    figures["kills (SIGKILL)"] = kills
    figures["messages held by hubs at their kill"] = len(held_at_kills)
    figures["duplicates (ran twice)"] = len(duplicated)
    figures["lost"] = len(ledger.missing(range(total)))
    figures["pending after recovery"] = await view.pending()
    figures["visibility_timeout (s)"] = VISIBILITY_TIMEOUT
    figures["recovery after a kill, median (s)"] = statistics.median(recoveries)
    figures["recovery after a kill, max (s)"] = max(recoveries)


@pytest.mark.parametrize("job_seconds", [0.5, 4.0], ids=["jobs_finish", "jobs_outlast_timeout"])
async def test_shutdown_under_load(
    chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures, job_seconds: float
) -> None:
    """SIGTERM while every worker is busy and the buffer is full: jobs in hand finish within
    shutdown_timeout (2 s) and are acked, or are cancelled at it and not acked; unstarted ones are
    handed back unacked; exit 0. A second hub then runs exactly what was left: every message
    finishes once."""
    total = scaled(2_000, 20_000)
    await view.publish(range(total))
    options = ("--work", str(job_seconds), "--workers", "50", "--buffer", "200", "--shutdown-timeout", "2")
    first = await hubs.start("first", *options)
    await wait_for(lambda: view.pending_at_least(200), timeout=30, what="a full buffer")
    first.signal(signal.SIGTERM)
    stopping = trio.current_time()
    assert await first.wait(timeout=15) == 0
    stop_seconds = trio.current_time() - stopping
    finished_by_first = Ledger.read([first.out]).runs
    released = await view.pending()
    second = await hubs.start("second", "--workers", "50", "--buffer", "200")

    async def all_done() -> bool:
        return not Ledger.read(hubs.outputs()).missing(range(total))

    await wait_for(all_done, timeout=120, what="every message to finish")
    await wait_for(view.settled, timeout=30, what="no pending entries")
    ledger = Ledger.read(hubs.outputs())
    assert ledger.duplicated() == {}  # nothing finished was left unacked, nothing unfinished acked
    assert Ledger.read([second.out]).runs
    assert bool(finished_by_first) == (job_seconds < 2)
    second.signal(signal.SIGTERM)
    assert await second.wait() == 0
    figures["messages"] = total
    figures["finished by the stopped hub"] = sum(finished_by_first.values())
    figures["handed back unacked at its stop"] = released
    figures["stop took (s), shutdown_timeout 2 s"] = stop_seconds
    figures["exit code"] = 0
    figures["duplicates"] = 0
    figures["lost"] = len(ledger.missing(range(total)))
