"""The actionhub hub and producer the peers harness runs (see actionhub_runner.py)."""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from typing import Any

import trio
from actionhub_runner import batch_size
from harness.common import CONCURRENCY, REDIS_URL, WORKLOAD, handle_trio

from actionhub import ActionHub, Job

TOPIC = "bench"
#: the bus: the harness's Redis DB, keys under their own prefix
URL = f"{REDIS_URL}?prefix=peers:actionhub:"
BATCH = batch_size(WORKLOAD)


def make_hub() -> ActionHub:
    hub = ActionHub(URL)

    @hub.action(TOPIC, min_workers=CONCURRENCY, max_workers=CONCURRENCY)
    async def bench(job: Job) -> None:
        await handle_trio(job.payload)

    return hub


async def serve() -> None:
    hub = make_hub()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with hub.running():
            async for _ in signals:
                return


class Producer:
    """``send`` publishes each payload through a running hub (with no actions of its own)."""

    def __init__(self) -> None:
        self.hub = ActionHub(URL)
        self.stack = AsyncExitStack()
        self.batch: list[Any] = []

    async def start(self) -> None:
        await self.stack.enter_async_context(self.hub.running())

    async def send(self, payload: dict[str, Any]) -> None:
        if BATCH <= 1 or payload.get("w"):  # warm-up rounds wait for what they sent
            await self.flush()
            await self.hub.publish(TOPIC, payload)
            return
        self.batch.append(payload)
        if len(self.batch) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        batch, self.batch = self.batch, []
        if batch:
            await self.hub.publish_many(TOPIC, batch)

    async def close(self) -> None:
        await self.flush()
        await self.stack.aclose()
