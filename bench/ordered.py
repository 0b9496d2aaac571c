"""Ordered against unordered throughput: two hub processes drain the same keyed workload.

    python -m bench.ordered                       # starts its own redis-server on a free port
    python -m bench.ordered -n 40000 --keys 1000 -r 3 --work 0

Three variants, two hub processes each, in the same run (alternating per round, so machine drift
hits them all; ratios are per round):

* ``unordered``: unkeyed messages on the topic's one stream (what an action reads without ``key``);
* ``unordered-keyed``: the same messages with keys, so on 16 partition streams, read by an
  unordered group (every partition, no lanes, no leases);
* ``ordered``: the same keyed messages, ``ordered=True, partitions=16``: each hub reads the 8
  partitions whose lease it holds, one message per key at a time.

The hubs start first and, for ``ordered``, split the partitions between them; then the clock
starts, the messages are written (pipelined XADD of wire-format entries, as any publisher would)
and the clock stops once every message is processed and acknowledged (every group on every
stream has read all and holds nothing). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import redis
import trio

from actionhub import ActionHub, Job
from actionhub.bus.redis.keys import partition_of
from actionhub.bus.redis.ordered import assign
from bench import redis_url

PARTITIONS = 16
HUBS = 2
TOPIC = "orders"
VARIANTS = ("unordered", "unordered-keyed", "ordered")


def _streams(prefix: str, variant: str) -> list[str]:
    if variant == "unordered":
        return [f"{prefix}{TOPIC}"]
    return [f"{prefix}{TOPIC}:p{p}" for p in range(PARTITIONS)]


def _publish(client: redis.Redis, prefix: str, variant: str, n: int, keys: int) -> None:
    with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            key = f"order-{i % keys}"
            doc: dict[str, object] = {"payload": {"order_id": i, "amount_cents": 1999}}
            if variant == "unordered":
                stream = f"{prefix}{TOPIC}"
            else:
                doc["key"] = key
                stream = f"{prefix}{TOPIC}:p{partition_of(key, PARTITIONS)}"
            pipe.xadd(stream, {"message": orjson.dumps(doc)})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()


def _drained(client: redis.Redis, streams: list[str], n: int) -> bool:
    read = pending = 0
    for stream in streams:
        for group in client.xinfo_groups(stream):
            read += group["entries-read"] or 0
            pending += group["pending"]
    return read >= n and pending == 0


def _settled(client: redis.Redis, prefix: str) -> bool:
    """Both hubs are members and each holds the leases the assignment gives it."""
    members = [m.decode() for m in client.zrange(f"{prefix}members:{TOPIC}:work", 0, -1)]
    holders = client.mget([f"{prefix}lease:{TOPIC}:work:{p}" for p in range(PARTITIONS)])
    owners = assign(members, PARTITIONS)
    return len(members) == HUBS and [h and h.decode() for h in holders] == [
        owners[p] for p in range(PARTITIONS)
    ]


def run_variant(url: str, variant: str, n: int, keys: int, work: float, workers: int) -> float:
    """Messages per second through two hub processes for one variant, on a fresh prefix."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(url)
    if variant != "unordered":  # else the group would read 16 empty partition streams too
        client.set(f"{prefix}partitions:{TOPIC}", PARTITIONS)
    for stream in _streams(prefix, variant):  # every group reads from the start: nothing is missed
        client.xgroup_create(stream, "work", id="0", mkstream=True)
    hub_url = f"{url}?prefix={prefix}"
    command = [sys.executable, "-m", "bench.ordered", "--serve", hub_url, variant, str(work), str(workers)]
    cwd = Path(__file__).resolve().parents[1]
    hubs = [subprocess.Popen(command, stdout=subprocess.PIPE, cwd=cwd) for _ in range(HUBS)]
    try:
        for hub in hubs:
            assert hub.stdout is not None and hub.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 30
        if variant == "ordered":
            while not _settled(client, prefix):
                assert time.monotonic() < deadline, "the hubs did not split the partitions"
                time.sleep(0.05)
            time.sleep(1.5)  # a partition joins a hub's reads when its blocking read returns (block=1 s)
        started = time.perf_counter()
        _publish(client, prefix, variant, n, keys)
        streams = _streams(prefix, variant)
        while not _drained(client, streams, n):
            time.sleep(0.005)
        return n / (time.perf_counter() - started)
    finally:
        for hub in hubs:
            hub.terminate()
        for hub in hubs:
            hub.wait(timeout=30)


async def serve(url: str, variant: str, work: float, workers: int) -> None:
    """One hub process: action ``work`` on ``orders``, ordered for the ordered variant."""
    hub = ActionHub(url)

    async def handle(job: Job) -> None:
        if work:
            await trio.sleep(work)

    options: dict[str, object] = {"ordered": True, "partitions": PARTITIONS} if variant == "ordered" else {}
    hub.bind("work", handle, topic=TOPIC, max_workers=workers, buffer=200, **options)
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with hub.running():
            print("ready", flush=True)
            async for _ in signals:
                break


def main(argv: Sequence[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--serve":
        url, variant, work, workers = sys.argv[2:6]
        trio.run(serve, url, variant, float(work), int(workers))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.ordered")
    parser.add_argument("-n", "--messages", type=int, default=40_000)
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys (default 1000)")
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("-w", "--workers", type=int, default=16, help="max_workers per hub")
    parser.add_argument("--work", type=float, default=0.0, help="seconds each message sleeps")
    parser.add_argument("--url", help="a Redis to use (default: start a private redis-server)")
    args = parser.parse_args(argv)

    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with redis_url(args.url) as url:
        for round_no in range(args.rounds):
            order = VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                rates[variant].append(
                    run_variant(url, variant, args.messages, args.keys, args.work, args.workers)
                )
    print(
        f"{args.messages:,} messages over {args.keys:,} keys, {HUBS} hub processes x {args.workers} workers, "
        f"work {args.work * 1000:g} ms, {args.rounds} rounds; median (min-max) msg/s"
    )
    for variant in VARIANTS:
        values = rates[variant]
        print(f"  {variant:<16} {statistics.median(values):>9,.0f} ({min(values):,.0f}-{max(values):,.0f})")
    for variant in VARIANTS[1:]:
        ratios = [v / u for v, u in zip(rates[variant], rates["unordered"], strict=True)]
        spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"  ratio {variant}/unordered: {statistics.median(ratios):.2f} {spread}")


if __name__ == "__main__":
    main()
