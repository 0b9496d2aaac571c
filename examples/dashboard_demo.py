"""Two hubs with steady traffic, and their dashboard: what the README's screenshot shows.

    python -m examples.dashboard_demo [--bus URL] [--port 8080] [--token T] [--for SECONDS]

On ``memory://`` (the default) both hubs share one in-process bus and the dashboard reads it
directly; on Redis each hub connects by itself and so does the dashboard. ``orders.charge``
works a few milliseconds per message, ``emails.send`` is quick, ``invoices.render`` fails one
message in ten twice (its dead letters), and ``inventory.sync`` panics now and then past its
restart limit (its escalations, recorded in the bus's ``escalations`` stream).
"""

from __future__ import annotations

import argparse
import logging
import random
from functools import partial

import trio

from actionhub import ActionHub, Backoff, Job
from actionhub.alerts import EscalationStream
from actionhub.bus.base import Bus
from actionhub.bus.memory import MemoryBus
from actionhub.dashboard import serve_dashboard


def demo_hub(bus: str | Bus, name: str, announce_interval: float) -> ActionHub:
    hub = ActionHub(bus, name=name, on_escalation=[EscalationStream()], announce_interval=announce_interval)

    @hub.action("orders.charge", min_workers=1, max_workers=8)
    async def charge(job: Job) -> None:
        await trio.sleep(random.uniform(0.002, 0.03))

    @hub.action("emails.send", max_workers=4)
    async def send_email(job: Job) -> None:
        await trio.sleep(0.001)

    @hub.action("invoices.render", max_attempts=2, retry_backoff=Backoff(0.05, 0.2), max_restarts=1000)
    async def render_invoice(job: Job) -> None:
        if job.payload["n"] % 10 == 0:
            raise ValueError(f"invoice {job.payload['n']}: negative total")

    @hub.action("inventory.sync", max_restarts=2, restart_window=5, max_attempts=1)
    async def sync(job: Job) -> None:
        if random.random() < 0.3:
            raise ConnectionError("warehouse API reset the connection")

    return hub


async def traffic(hub: ActionHub, rate: float) -> None:
    """Publish about ``rate`` messages a second over the demo's topics."""
    n = 0
    while True:
        n += 1
        await hub.publish("orders.charge", {"order": n})
        if n % 2 == 0:
            await hub.publish("emails.send", {"to": f"customer-{n}@example.com"})
        if n % 5 == 0:
            await hub.publish("invoices.render", {"n": n // 5})
        if n % 20 == 0:
            await hub.publish("inventory.sync", {"sku": f"SKU-{n}"})
        await trio.sleep(1 / rate)


async def main(
    url: str, port: int, token: str | None, seconds: float | None, interval: float, window: float
) -> None:
    bus: str | Bus = MemoryBus() if url.startswith("memory:") else url
    hubs = [demo_hub(bus, name, interval) for name in ("hub-a", "hub-b")]
    with trio.move_on_after(seconds if seconds is not None else float("inf")):
        async with hubs[0].running(), hubs[1].running(), trio.open_nursery() as nursery:
            serve = partial(serve_dashboard, bus, port=port, token=token, interval=interval, window=window)
            base = await nursery.start(serve)
            print(f"dashboard on {base}/", flush=True)
            nursery.start_soon(traffic, hubs[0], 60.0)
            nursery.start_soon(traffic, hubs[1], 40.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bus", default="memory://")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token")
    parser.add_argument("--for", dest="seconds", type=float, help="stop after SECONDS")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="hubs announce, the dashboard reads, every S"
    )
    parser.add_argument("--window", type=float, default=900.0, help="the charts' span in seconds")
    args = parser.parse_args()
    logging.getLogger("actionhub").setLevel(logging.CRITICAL)  # the dashboard shows what happens
    trio.run(main, args.bus, args.port, args.token, args.seconds, args.interval, args.window)
