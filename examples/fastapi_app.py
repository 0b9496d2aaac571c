"""A FastAPI service that calls actionhub through `AsyncClient`, the client living as long as the
app (its lifespan). With hubs serving ``examples.shop:hub`` on the same Redis::

    ACTIONHUB_BUS=redis://localhost:6379/0 uvicorn examples.fastapi_app:app

``POST /orders`` queues a charge and answers at once with its message id; ``POST /orders/now``
waits (up to 5 s) for the action's reply and returns it, 504 if none comes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from actionhub.client import AsyncClient


def create_app(bus: str | None = None) -> FastAPI:
    url = bus or os.environ.get("ACTIONHUB_BUS", "redis://localhost:6379/0")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncClient(url) as client:
            app.state.actionhub = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders")
    async def queue_order(order: dict[str, Any], request: Request) -> dict[str, str]:
        client: AsyncClient = request.app.state.actionhub
        return {"queued": await client.publish("orders.charge", order)}

    @app.post("/orders/now")
    async def charge_now(order: dict[str, Any], request: Request) -> Any:
        client: AsyncClient = request.app.state.actionhub
        try:
            reply = await client.request("orders.charge", order, timeout=5)
        except TimeoutError:
            raise HTTPException(504, "no reply from orders.charge within 5 s") from None
        return reply.payload

    return app


app = create_app()
