"""The action's dependency goes away under one hub, and then Redis itself is restarted and frozen
under an action that writes to it: the group goes past its restart limit, cools down instead of
leaving, comes back by itself, and every message runs; none is dead-lettered, none is lost."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import trio

from actionhub.testing import RedisServer
from tests.chaos.conftest import Figures, scaled
from tests.chaos.harness import HubProcess, Hubs, Ledger, RedisView, wait_for
from tests.servers import free_port


class Readiness:
    """Polls a hub's /readyz every 0.1 s; keeps each answer (its time, status and problems)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/readyz"
        self.answers: list[tuple[float, int, list[str]]] = []

    async def poll(self) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                try:
                    response = await http.get(self.url)
                    self.answers.append(
                        (trio.current_time(), response.status_code, response.json()["problems"])
                    )
                except httpx.HTTPError as error:
                    self.answers.append((trio.current_time(), 0, [repr(error)]))
                await trio.sleep(0.1)

    def cooling_down(self) -> list[float]:
        return [at for at, status, problems in self.answers if status == 503 and _cooling(problems)]

    def last_status(self) -> int:
        return self.answers[-1][1] if self.answers else 0


def _cooling(problems: list[str]) -> bool:
    return any("cooling down" in problem for problem in problems)


def give_ups(hub: HubProcess) -> int:
    return hub.log.read_text(errors="replace").count("went past its restart limit")


async def _finish(hub: HubProcess, hubs: Hubs, view: RedisView, total: int) -> Ledger:
    """Wait until every one of ``total`` messages ran and nothing is pending; none dead-lettered."""

    async def all_done() -> bool:
        return not Ledger.read(hubs.outputs()).missing(range(total))

    await wait_for(all_done, timeout=240, what="every message to run")
    await wait_for(view.settled, timeout=30, what="no pending entries")
    assert await view.dead_letters() == []
    assert hub.process.poll() is None, "the hub died"
    return Ledger.read(hubs.outputs())


async def test_dependency_outage(
    chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures, tmp_path: Path
) -> None:
    total, outage = scaled(5_000, 50_000), 10.0
    flag, port = tmp_path / "store-down", free_port()
    await view.publish(range(total))
    hub = await hubs.start(
        "hub", "--work", "0.01", "--fail-while", str(flag), "--health-port", str(port), "--buffer", "50"
    )
    readiness = Readiness(port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(readiness.poll)

        async def some_done() -> bool:
            return len(Ledger.read(hubs.outputs()).runs) >= total // 5

        await wait_for(some_done, timeout=60, what="the hub to get going")
        assert readiness.last_status() == 200
        flag.touch()  # every run of the action raises from now on
        await trio.sleep(outage)
        flag.unlink()
        cleared = trio.current_time()
        ledger = await _finish(hub, hubs, view, total)
        finished = trio.current_time()

        async def ready_again() -> bool:
            return readiness.last_status() == 200

        await wait_for(ready_again, timeout=30, what="/readyz to pass again")
        nursery.cancel_scope.cancel()
    cooling = readiness.cooling_down()
    assert cooling, "/readyz never said the group was cooling down"
    assert give_ups(hub) >= 1
    hub.signal(signal.SIGTERM)
    assert await hub.wait() == 0
    figures["messages, one hub, store down for (s)"] = f"{total}, {outage}"
    figures["give-ups (cool-downs)"] = give_ups(hub)
    figures["/readyz 503 'cooling down' for (s)"] = max(cooling) - min(cooling)
    figures["finished, seconds after the store is back"] = finished - cleared
    figures["duplicates"] = len(ledger.duplicated())
    figures["dead-lettered"] = 0
    figures["lost"] = len(ledger.missing(range(total)))


async def test_redis_restarted_then_frozen_under_an_action_that_writes_to_it(
    chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures
) -> None:
    total, frozen = scaled(3_000, 30_000), 8.0
    await view.publish(range(total))
    hub = await hubs.start("hub", "--work", "0.005", "--write-to", chaos_redis.url)

    async def some_done() -> bool:
        return len(Ledger.read(hubs.outputs()).runs) >= total // 4

    await wait_for(some_done, timeout=60, what="the hub to get going")
    await trio.to_thread.run_sync(chaos_redis.restart)
    await trio.sleep(1)
    chaos_redis.pause()  # SIGSTOP: every connection hangs, the action's writes time out
    await trio.sleep(frozen)
    chaos_redis.resume()
    resumed = trio.current_time()
    more = scaled(1_000, 10_000)
    await view.publish(range(total, total + more))
    ledger = await _finish(hub, hubs, view, total + more)
    written = await view.run(view.client.scard, "written")
    assert written == total + more  # the action's own writes: each message's made it, at least once
    hub.signal(signal.SIGTERM)
    assert await hub.wait() == 0
    figures["messages; Redis restarted, frozen for (s)"] = f"{total} + {more}, {frozen}"
    figures["give-ups (cool-downs)"] = give_ups(hub)
    figures["finished, seconds after SIGCONT"] = trio.current_time() - resumed
    figures["duplicates"] = len(ledger.duplicated())
    figures["dead-lettered"] = 0
    figures["lost"] = len(ledger.missing(range(total + more)))
