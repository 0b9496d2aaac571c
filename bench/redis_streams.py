"""Throughput of no-op messages through one hub on Redis streams (with acks), against a bare
redis-py loop doing only ``XREADGROUP COUNT 100`` + pipelined ``XACK``.

    python -m bench.redis_streams                  # starts its own redis-server on a free port
    python -m bench.redis_streams -n 50000 -r 3 --url redis://127.0.0.1:6379/0

Each round pre-fills a fresh stream with N wire-format entries (not timed), then times how long
the consumer takes to process and acknowledge all of them. Bare and hub runs alternate, so
machine drift hits both; the ratio is taken per round. This is a benchmark, not a test.
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

ENTRY = b'{"payload": {"order_id": 123456, "customer": "cust-000042", "amount_cents": 1999}}'


def fill(client: redis.Redis, stream: str, n: int) -> None:
    with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"message": ENTRY})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()


def bare(client: redis.Redis, n: int) -> float:
    """The floor: read 100 at a time, ack them in one pipelined round trip, nothing else."""
    stream = f"bench:{uuid.uuid4().hex}"
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    fill(client, stream, n)
    started = time.perf_counter()
    done = 0
    while done < n:
        response = client.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000)
        ids = [entry_id for _, entries in response for entry_id, _ in entries]
        with client.pipeline(transaction=False) as pipe:
            pipe.xack(stream, "g", *ids)
            pipe.execute()
        done += len(ids)
    elapsed = time.perf_counter() - started
    client.delete(stream)
    return n / elapsed


def hub(url: str, client: redis.Redis, n: int, workers: int) -> float:
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    stream = f"{prefix}noop"
    client.xgroup_create(stream, "noop", id="0", mkstream=True)
    fill(client, stream, n)

    async def run() -> float:
        finished = trio.Event()
        count = 0
        hub = ActionHub(f"{url}?prefix={prefix}")

        @hub.action("noop", min_workers=workers, max_workers=workers, buffer=100)
        async def noop(job: Job) -> None:
            nonlocal count
            count += 1
            if count == n:
                finished.set()

        started = time.perf_counter()
        async with hub.running():
            await finished.wait()
            await hub.bus.flush_acks()  # type: ignore[attr-defined]  # all acked inside the clock
        elapsed = time.perf_counter() - started
        assert client.xpending(stream, "noop")["pending"] == 0
        return n / elapsed

    rate = trio.run(run)
    client.delete(stream)
    return rate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_streams")
    parser.add_argument("-n", "--messages", type=int, default=30_000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("-w", "--workers", type=int, default=10)
    parser.add_argument("--url", help="a Redis to use (default: start a private redis-server)")
    args = parser.parse_args(argv)

    with redis_url(args.url) as url:
        client = redis.Redis.from_url(url)
        bare_rates, hub_rates = [], []
        for round_no in range(args.rounds):
            order = ["bare", "hub"] if round_no % 2 == 0 else ["hub", "bare"]
            for kind in order:
                if kind == "bare":
                    bare_rates.append(bare(client, args.messages))
                else:
                    hub_rates.append(hub(url, client, args.messages, args.workers))
    ratios = [h / b for h, b in zip(hub_rates, bare_rates, strict=True)]
    print(
        f"{args.messages:,} no-op messages x {args.rounds} rounds on Redis streams ({url}); median (min-max)"
    )
    print(f"  bare XREADGROUP COUNT 100 + pipelined XACK : {statistics.median(bare_rates):>9,.0f} msg/s")
    print(f"  one hub process, {args.workers} workers, acked  : {statistics.median(hub_rates):>9,.0f} msg/s")
    print(f"  ratio hub/bare: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
