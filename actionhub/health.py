"""Health probes of a hub for process supervisors and Kubernetes: ``/healthz`` and ``/readyz``.

``/healthz`` (liveness) answers 200 while the hub runs or stops gracefully: its trio loop answered
the request, and its bus is reachable or being reconnected to (a hub never gives up on its bus). ``/readyz``
(readiness) answers 200 only when the bus is connected and every started group is running: none
cooling down past its restart limit, none paused. Both answer 503 otherwise, with a JSON body that
says why. `serve_health` serves them alone (``actionhub run --health-port``); `serve_metrics`
serves them beside ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .supervision.policy import GroupState

if TYPE_CHECKING:
    from .hub import ActionHub

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@attrs.frozen
class Health:
    """What the probes say of a hub at one moment; ``problems`` say why it is not ready."""

    live: bool
    ready: bool
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"live": self.live, "ready": self.ready, "problems": list(self.problems)}


def check(hub: ActionHub) -> Health:
    """The hub's liveness and readiness now."""
    if hub.is_stopping:  # alive, finishing its in-flight work
        return Health(live=True, ready=False, problems=(f"hub {hub.name} is stopping",))
    if not hub.is_running:
        return Health(live=False, ready=False, problems=(f"hub {hub.name} is not running",))
    problems: list[str] = []
    if not hub.bus.connected:
        problems.append("the bus is unreachable; reconnecting")
    for stat in hub.stats():
        if stat.state is GroupState.COOLING_DOWN:
            problems.append(f"group {stat.addr} is cooling down past its restart limit")
        elif stat.state is not GroupState.RUNNING:
            problems.append(f"group {stat.addr} is {stat.state.value}")
    return Health(live=True, ready=not problems, problems=tuple(problems))


def health_app(hub: ActionHub, fallback: ASGIApp | None = None) -> ASGIApp:
    """An ASGI app answering ``GET /healthz`` and ``GET /readyz`` for ``hub``; any other path goes
    to ``fallback`` (say, the metrics app), or is a 404."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to set up or tear down
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in ("/healthz", "/readyz"):
            if fallback is not None:
                await fallback(scope, receive, send)
            elif scope["type"] == "http":
                await _answer(send, 404, {"error": "not found; try /healthz or /readyz"})
            return
        health = check(hub)
        ok = health.live if path == "/healthz" else health.ready
        await _answer(send, 200 if ok else 503, health.as_dict())

    return app


async def _answer(send: Send, status: int, body: dict[str, object]) -> None:
    payload = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def serve_asgi(
    app: ASGIApp, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``app`` with hypercorn under trio until cancelled; `started` with its base URL as
    bound (port 0 picks a free port)."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]  # IPv6 needs brackets
    config.accesslog = None
    config.errorlog = None  # hypercorn's own lines; failures to bind still raise
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config, mode="asgi"))  # type: ignore[arg-type]
        task_status.started(binds[0])


async def serve_health(
    hub: ActionHub,
    port: int,
    *,
    host: str = "0.0.0.0",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub``'s ``/healthz`` and ``/readyz`` on ``http://host:port`` until cancelled;
    `started` with the base URL as bound."""
    await serve_asgi(health_app(hub), host, port, task_status=task_status)


__all__ = ["Health", "check", "health_app", "serve_asgi", "serve_health"]
