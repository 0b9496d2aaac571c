"""What a message costs Redis: the figure that bounds one node (docs/scaling.md).

    python -m bench.redis_cost                 # its own redis-server, 100,000 messages x 3
    python -m bench.redis_cost -n 50000 -r 5 --url redis://127.0.0.1:6379/0

Per round: one hub publishes N no-op messages with ``publish_many`` (per 100) and runs them; the
Redis server's own CPU time (``INFO cpu``: ``used_cpu_user`` + ``used_cpu_sys``) and its commands
(``INFO commandstats``) are read before and after. Reported: Redis CPU microseconds per message,
commands per message, and the messages per second one fully used Redis core would carry at that
cost (the ceiling of one node, or of one Sentinel primary, whatever the number of hubs). Twice:
publishing in batches (the bulk path), then one ``publish`` per message from 8 tasks (a request
handler's path). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence

import redis
import trio

from actionhub import ActionHub, Job
from bench import redis_url

WORKERS = 10
BATCH = 100
PUBLISHERS = 8


def _server_cost(client: redis.Redis) -> tuple[float, int]:
    """(Redis CPU seconds so far, commands so far) of the server behind ``client``."""
    cpu = client.info("cpu")
    stats = client.info("commandstats")
    calls = sum(int(value["calls"]) for value in stats.values())
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls


def one_round(url: str, n: int, batched: bool) -> tuple[float, float, float]:
    """(Redis CPU us per message, commands per message, messages per second of the hub)."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    joiner = "&" if "?" in url else "?"
    client = redis.Redis.from_url(url)

    async def run() -> tuple[float, float, float]:
        finished = trio.Event()
        count = 0
        hub = ActionHub(f"{url}{joiner}prefix={prefix}")

        @hub.action("noop", min_workers=WORKERS, max_workers=WORKERS, buffer=500)
        async def noop(job: Job) -> None:
            nonlocal count
            count += 1
            if count == n:
                finished.set()

        async def publish_each(numbers: range) -> None:
            for number in numbers:
                await hub.publish("noop", number)

        async with hub.running():
            await hub.publish("warm-up", 0)
            cpu_before, calls_before = _server_cost(client)
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                if batched:
                    for first in range(0, n, BATCH):
                        await hub.publish_many("noop", list(range(first, min(first + BATCH, n))))
                else:
                    for first in range(PUBLISHERS):
                        nursery.start_soon(publish_each, range(first, n, PUBLISHERS))
                await finished.wait()
            await hub.bus.flush_acks()  # type: ignore[attr-defined]
            elapsed = time.perf_counter() - started
            cpu_after, calls_after = _server_cost(client)
        # the two INFO calls of each reading are in calls_after - calls_before: negligible here
        return (cpu_after - cpu_before) / n * 1e6, (calls_after - calls_before) / n, n / elapsed

    try:
        return trio.run(run)
    finally:
        client.delete(*client.keys(f"{prefix}*") or [f"{prefix}none"])
        client.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--messages", type=int, default=100_000, help="messages per round (100,000)")
    parser.add_argument("-r", "--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--url", help="a Redis to use instead of a private one")
    args = parser.parse_args(argv)
    with redis_url(args.url) as url:
        print(f"{args.messages:,} no-op messages x {args.rounds} rounds, one hub ({url}); median (min-max)")
        for batched, label in ((True, f"publish_many per {BATCH}"), (False, f"publish, {PUBLISHERS} tasks")):
            rounds = [one_round(url, args.messages, batched) for _ in range(args.rounds)]
            cost, commands, rate = (sorted(column) for column in zip(*rounds, strict=True))
            median = statistics.median(cost)
            print(f"{label}:")
            print(f"  Redis CPU per message     {median:6.2f} us ({cost[0]:.2f}-{cost[-1]:.2f})")
            print(f"  commands per message      {statistics.median(commands):6.2f}")
            print(f"  one hub here              {statistics.median(rate):9,.0f} msg/s")
            print(f"  one Redis core's ceiling  {1e6 / median:9,.0f} msg/s at that cost")


if __name__ == "__main__":
    main()
