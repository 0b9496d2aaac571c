"""The web dashboard: live hubs and their groups with their rates, controls, topics with their
consumer groups and a message browser, dead letters, escalations.

``actionhub dashboard --bus URL`` serves it (hypercorn under trio); `app` makes the ASGI app to
mount in a service of your own that runs under trio. Read-only unless given a token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import partial

import trio

from ..bus.base import Bus
from ..health import serve_asgi
from ._app import TOKEN_VARIABLE, Dashboard, app
from ._sampler import Sampler


async def serve_dashboard(
    bus: str | Bus,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    interval: float = 2.0,
    window: float = 900.0,
    timeout: float = 5.0,
    allowed_hosts: Sequence[str] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard of ``bus`` on ``http://host:port`` until cancelled; `started` with
    its base URL once the bus answered and the port is bound (`BusError` if the bus does not
    answer within ``timeout`` seconds: no page would). On a loopback ``host`` it answers only
    under this machine's own names unless ``allowed_hosts`` says otherwise."""
    if allowed_hosts is None and _is_loopback(host):
        allowed_hosts = [host, *LOOPBACK_NAMES]  # only this machine can reach it: only its names
    dashboard = app(
        bus, token=token, interval=interval, window=window, timeout=timeout, allowed_hosts=allowed_hosts
    )
    async with dashboard.running(), trio.open_nursery() as nursery:
        base: str = await nursery.start(partial(serve_asgi, dashboard, host, port))
        task_status.started(base)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["TOKEN_VARIABLE", "Dashboard", "Sampler", "app", "serve_dashboard"]
