"""``/healthz`` and ``/readyz``: served alone or beside ``/metrics``, over real HTTP (httpx)."""

from __future__ import annotations

from functools import partial

import httpx
import trio
import trio.lowlevel

from actionhub import ActionHub, Backoff, GroupState, Job
from actionhub.health import check, serve_health
from actionhub.metrics import serve_metrics
from tests.polling import wait_until


async def test_readyz_fails_while_a_group_cools_down_and_healthz_while_the_hub_is_down() -> None:
    hub = ActionHub()
    broken = True

    async def save(job: Job) -> None:
        if broken:
            raise ConnectionError("store unreachable")

    hub.bind("save", save, max_restarts=0, cool_down=Backoff(600, 600, 0))
    hub.bind("other", save)
    async with hub.running(), trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await nursery.start(partial(serve_health, hub, 0, host="127.0.0.1"))
        live, ready = await http.get(f"{base}/healthz"), await http.get(f"{base}/readyz")
        assert (live.status_code, ready.status_code) == (200, 200)
        assert ready.json() == {"live": True, "ready": True, "problems": []}
        assert (await http.get(f"{base}/metrics")).status_code == 404  # health only here

        await hub.publish("save", 1)
        await wait_until(lambda: hub.group("save").stats().state is GroupState.COOLING_DOWN)
        ready = await http.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"] == ["group save is cooling down past its restart limit"]
        assert (await http.get(f"{base}/healthz")).status_code == 200  # alive: it comes back

        hub.group("other").pause()
        assert (await http.get(f"{base}/readyz")).json()["problems"][-1] == "group other is paused"
        hub.group("other").resume()

        broken = False
        hub.group("save").restart()  # an operator ends the cool-down
        await wait_until(lambda: hub.group("save").stats().state is GroupState.RUNNING)
        assert (await http.get(f"{base}/readyz")).status_code == 200
        nursery.cancel_scope.cancel()
    health = check(hub)
    assert not health.live and not health.ready  # a stopped hub


async def test_the_metrics_port_serves_the_probes_too() -> None:
    hub = ActionHub(name="probed")

    async def noop(job: Job) -> None:
        pass

    hub.bind("noop", noop)
    async with hub.running(), trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        url = await nursery.start(partial(serve_metrics, hub, 0, host="127.0.0.1"))
        base = url.removesuffix("/metrics")
        assert (await http.get(f"{base}/readyz")).json()["ready"] is True
        assert (await http.get(f"{base}/healthz")).status_code == 200
        scraped = (await http.get(url)).text
        assert 'actionhub_group_state{group="noop",hub="probed",state="running",topic="noop"} 1.0' in scraped
        nursery.cancel_scope.cancel()
