"""Redis restarted, killed and paused, and the network between hubs and Redis cut, stalled, slowed
and refused, while two hubs work: they reconnect by themselves and lose nothing."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import pytest
import trio

from actionhub.testing import RedisServer
from tests.chaos.conftest import Figures, bus_url, scaled
from tests.chaos.harness import Hubs, Ledger, RedisView, wait_for
from tests.chaos.proxy import ChaosProxy

# the hubs' socket timeout is block + 10 s (block=0.5 here): an outage past it makes every
# blocked call fail and reconnect
PAST_SOCKET_TIMEOUT = 12.5
HUB_OPTIONS = ("--work", "0.01", "--workers", "10", "--buffer", "50")


async def _through_outage(
    hubs: Hubs,
    view: RedisView,
    figures: Figures,
    outage: Callable[[], Awaitable[None]],
    url: str | None = None,
) -> None:
    """Two hubs work through a backlog; the outage strikes in the middle of it; then a second batch
    is published: everything finishes, nothing stays pending, nothing is dead-lettered."""
    before, after = scaled(3_000, 20_000), scaled(1_000, 5_000)
    await view.publish(range(before))
    workers = [await hubs.start(f"hub-{n}", *HUB_OPTIONS, url=url) for n in range(2)]

    async def some_done() -> bool:
        return len(Ledger.read(hubs.outputs()).runs) >= before // 3

    await wait_for(some_done, timeout=60, what="the hubs to get going")
    started = trio.current_time()
    await outage()
    back = trio.current_time()
    await view.publish(range(before, before + after))

    async def all_done() -> bool:
        return not Ledger.read(hubs.outputs()).missing(range(before + after))

    recovered = await wait_for(all_done, timeout=120, what="every message to finish")
    await wait_for(view.settled, timeout=30, what="no pending entries")
    ledger = Ledger.read(hubs.outputs())
    assert await view.dead_letters() == []
    assert all(hub.process.poll() is None for hub in workers), "a hub died"
    for hub in workers:
        hub.signal(signal.SIGTERM)
        assert await hub.wait() == 0
    figures["messages before / after the outage"] = f"{before} / {after}"
    figures["outage (s)"] = back - started
    figures["all finished, seconds after the outage"] = recovered
    figures["duplicates"] = len(ledger.duplicated())
    figures["lost"] = len(ledger.missing(range(before + after)))
    figures["pending at the end"] = await view.pending()


@pytest.mark.parametrize("how", ["restart", "kill", "pause"])
async def test_redis_outage(
    chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures, how: str
) -> None:
    """restart: SIGTERM (Redis saves) and start again; kill: SIGKILL, 1 s down, start again (the
    append-only file, fsynced on every write, is all there is); pause: SIGSTOP for longer than the
    client timeouts, then SIGCONT (connections stay open and hang, as on a frozen VM)."""

    async def outage() -> None:
        if how == "restart":
            await trio.to_thread.run_sync(chaos_redis.restart)
        elif how == "kill":
            chaos_redis.kill()
            await trio.sleep(1)
            await trio.to_thread.run_sync(chaos_redis.start)
        else:
            chaos_redis.pause()
            await trio.sleep(PAST_SOCKET_TIMEOUT)
            chaos_redis.resume()

    await _through_outage(hubs, view, figures, outage)


async def test_connections_cut(
    chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures
) -> None:
    """Through a proxy: every connection reset, again and again; 200 ms added to every packet; a
    partition that holds every byte for longer than the client timeouts; connections refused."""
    proxy = ChaosProxy(chaos_redis.port)
    cycles = scaled(1, 3)
    cuts = 0

    async def outage() -> None:
        nonlocal cuts
        for _ in range(cycles):
            for _ in range(3):
                cuts += proxy.cut()
                await trio.sleep(0.5)
            proxy.delay = 0.2
            await trio.sleep(3)
            proxy.delay = 0
            proxy.stall()
            await trio.sleep(PAST_SOCKET_TIMEOUT)
            proxy.heal()
            proxy.refusing = True
            cuts += proxy.cut()
            await trio.sleep(3)
            proxy.refusing = False

    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        await _through_outage(hubs, view, figures, outage, url=bus_url(proxy.url()))
        nursery.cancel_scope.cancel()
    figures["connections reset"] = cuts
    figures["connections accepted"] = proxy.accepted
