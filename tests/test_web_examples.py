"""``examples/fastapi_app.py`` and ``examples/flask_app.py``, each with its framework's own test
client, against a live hub on a real Redis: a queued order runs, a synchronous one gets the
action's reply, and with no hub to answer the service says 504 rather than hanging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from actionhub import ActionHub, Job
from examples import fastapi_app, flask_app
from tests.polling import wait_until

# starlette's test client now prefers httpx2 over httpx; the project keeps httpx (its webhooks)
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def _test_client(app: Any) -> Any:
    from fastapi.testclient import TestClient  # imported here: the warning above is filtered

    return TestClient(app)


@asynccontextmanager
async def charging_hub(url: str) -> AsyncIterator[list[Any]]:
    charged: list[Any] = []
    hub = ActionHub(url, name="shop")

    @hub.action("orders.charge")
    async def charge(job: Job) -> None:
        charged.append(job.payload)
        await job.reply({"charged": job.payload})

    async with hub.running():
        yield charged


def through_fastapi(url: str) -> list[tuple[int, Any]]:
    with _test_client(fastapi_app.create_app(url)) as http:  # runs the app's lifespan
        queued = http.post("/orders", json={"id": 1})
        now = http.post("/orders/now", json={"id": 2})
        return [(queued.status_code, queued.json()), (now.status_code, now.json())]


def through_flask(url: str) -> list[tuple[int, Any]]:
    app = flask_app.create_app(url)
    with app.test_client() as http:
        queued = http.post("/orders", json={"id": 1})
        now = http.post("/orders/now", json={"id": 2})
        answers = [(queued.status_code, queued.get_json()), (now.status_code, now.get_json())]
    app.extensions["actionhub"].close()
    return answers


SERVICES: dict[str, Callable[[str], list[tuple[int, Any]]]] = {
    "fastapi": through_fastapi,
    "flask": through_flask,
}


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_the_service_queues_and_awaits_actions(service: str, redis_url: str) -> None:
    async with charging_hub(redis_url) as charged:
        (queued_status, queued), (now_status, now) = await trio.to_thread.run_sync(
            SERVICES[service], redis_url
        )
        await wait_until(lambda: len(charged) == 2)
    assert queued_status == 200 and isinstance(queued["queued"], str)
    assert (now_status, now) == (200, {"charged": {"id": 2}})
    assert sorted(order["id"] for order in charged) == [1, 2]


async def test_without_a_hub_the_fastapi_service_answers_504(redis_url: str) -> None:
    def ask() -> tuple[int, Any]:
        with _test_client(fastapi_app.create_app(redis_url)) as http:
            response = http.post("/orders/now", json={"id": 3})
            return response.status_code, response.json()

    status, body = await trio.to_thread.run_sync(ask)
    assert (status, body) == (504, {"detail": "no reply from orders.charge within 5 s"})
