"""A Flask service that calls actionhub through the blocking `Client` (thread-safe: one for the
app, shared by its request threads). With hubs serving ``examples.shop:hub`` on the same Redis::

    ACTIONHUB_BUS=redis://localhost:6379/0 flask --app examples.flask_app run

``POST /orders`` queues a charge and answers at once with its message id; ``POST /orders/now``
waits (up to 5 s) for the action's reply and returns it, 504 if none comes.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort, request

from actionhub.client import Client


def create_app(bus: str | None = None) -> Flask:
    app = Flask(__name__)
    client = Client(bus or os.environ.get("ACTIONHUB_BUS", "redis://localhost:6379/0"))
    app.extensions["actionhub"] = client

    @app.post("/orders")
    def queue_order() -> dict[str, str]:
        return {"queued": client.publish("orders.charge", request.get_json())}

    @app.post("/orders/now")
    def charge_now() -> Any:
        try:
            reply = client.request("orders.charge", request.get_json(), timeout=5)
        except TimeoutError:
            abort(504, "no reply from orders.charge within 5 s")
        return reply.payload

    return app
