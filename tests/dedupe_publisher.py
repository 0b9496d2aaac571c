"""One publisher process of tests/test_dedupe.py: a `Client` or a hub says it is ready, waits for
the go (a BLPOP every publisher is released from at once), publishes once with a dedupe key and
prints the id it got.

    python -m tests.dedupe_publisher client|hub BUS_URL REDIS_URL TOPIC DEDUPE_KEY LIST
"""

from __future__ import annotations

import sys

import redis
import trio

from actionhub import ActionHub
from actionhub.client import Client


def main() -> None:
    flavour, bus_url, redis_url, topic, dedupe_key, lists = sys.argv[1:7]
    control = redis.Redis.from_url(redis_url)

    def ready_then_go() -> None:
        control.rpush(f"{lists}:ready", 1)
        assert control.blpop([f"{lists}:go"], timeout=60) is not None, "no go within 60 s"

    if flavour == "client":
        with Client(bus_url) as client:
            client.publish("warm-up", 0)  # connected and the script loaded before the go
            ready_then_go()
            print(client.publish(topic, {"from": "client"}, dedupe_key=dedupe_key), flush=True)
        return

    async def run() -> None:
        async with ActionHub(bus_url).running() as hub:
            await hub.publish("warm-up", 0)
            await trio.to_thread.run_sync(ready_then_go)
            print(await hub.publish(topic, {"from": "hub"}, dedupe_key=dedupe_key), flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
