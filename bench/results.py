"""The per-message cost of ``keep_result``: one hub on Redis streams draining the same pre-filled
stream with and without it.

    python -m bench.results                   # starts its own redis-server on a free port
    python -m bench.results -n 20000 -r 3 --url redis://127.0.0.1:6379/0 --work 0.001

With ``keep_result`` each message costs two more writes (its ``running`` record before the
action, its ``done`` record with the return value before the ack), both queued for the hub's one
status writer (group commit); the acker waits for the writes queued before its acks. Rounds
alternate the order of the two runs, so machine drift hits both; the ratio is taken per round
and its median printed. Also timed: ``hub.publish`` while the topic keeps results (the pending
record written by the publish script) against a topic that does not. This is a benchmark, not a test.
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
from bench.redis_streams import fill


def drain(url: str, client: redis.Redis, n: int, workers: int, keep: float | None, work: float) -> float:
    """Messages per second one hub runs and acks (with ``keep_result=keep``)."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    stream = f"{prefix}work"
    client.xgroup_create(stream, "work", id="0", mkstream=True)
    fill(client, stream, n)

    async def run() -> float:
        finished = trio.Event()
        count = 0
        hub = ActionHub(f"{url}?prefix={prefix}")

        @hub.action("work", min_workers=workers, max_workers=workers, buffer=100, keep_result=keep)
        async def action(job: Job) -> dict[str, int]:
            nonlocal count
            if work:
                await trio.sleep(work)
            count += 1
            if count == n:
                finished.set()
            return {"order": count}

        started = time.perf_counter()
        async with hub.running():
            await finished.wait()
            await hub.bus.flush_acks()  # type: ignore[attr-defined]  # all acked inside the clock
        elapsed = time.perf_counter() - started
        assert client.xpending(stream, "work")["pending"] == 0
        return n / elapsed

    rate = trio.run(run)
    for name in client.scan_iter(match=f"{prefix}*", count=10_000):
        client.delete(name)
    return rate


def publishes(url: str, n: int, keep: bool) -> float:
    """``hub.publish`` calls per second to a topic kept (a group with keep_result) or not."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"

    async def run() -> float:
        hub = ActionHub(f"{url}?prefix={prefix}")
        async with hub.running():
            if keep:  # what a hub of a keep_result group sets: the publish script writes pending
                await hub.bus.statuses().keep("orders", "orders", 60)
            started = time.perf_counter()
            for i in range(n):
                await hub.publish("orders", {"order": i})
            return n / (time.perf_counter() - started)

    rate = trio.run(run)
    client = redis.Redis.from_url(url)
    for name in client.scan_iter(match=f"{prefix}*", count=10_000):
        client.delete(name)
    return rate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.results")
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("-w", "--workers", type=int, default=10)
    parser.add_argument("--work", type=float, default=0.0, metavar="S", help="each action sleeps S seconds")
    parser.add_argument("--url", help="a Redis to use (default: start a private redis-server)")
    args = parser.parse_args(argv)

    with redis_url(args.url) as url:
        client = redis.Redis.from_url(url)
        rates: dict[str, list[float]] = {"none": [], "keep": [], "publish": [], "publish-kept": []}
        for round_no in range(args.rounds):
            order = [None, 3600.0] if round_no % 2 == 0 else [3600.0, None]
            for keep in order:
                rate = drain(url, client, args.messages, args.workers, keep, args.work)
                rates["none" if keep is None else "keep"].append(rate)
            for kept in (False, True) if round_no % 2 == 0 else (True, False):
                rates["publish-kept" if kept else "publish"].append(publishes(url, args.messages // 4, kept))
    ratios = [k / p for k, p in zip(rates["keep"], rates["none"], strict=True)]
    publish_ratios = [k / p for k, p in zip(rates["publish-kept"], rates["publish"], strict=True)]

    def line(name: str) -> str:
        values = rates[name]
        return f"{statistics.median(values):>9,.0f} msg/s ({min(values):,.0f}-{max(values):,.0f})"

    work = f", actions sleep {args.work}s" if args.work else ", no-op actions"
    print(f"{args.messages:,} messages x {args.rounds} rounds, one hub, {args.workers} workers{work} ({url})")
    print(f"  without keep_result        : {line('none')}")
    print(f"  keep_result=3600           : {line('keep')}")
    print(f"  ratio keep/none: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    print(f"  hub.publish, topic not kept: {line('publish')}")
    print(f"  hub.publish, topic kept    : {line('publish-kept')}")
    print(
        f"  ratio kept/not: {statistics.median(publish_ratios):.2f} "
        f"({min(publish_ratios):.2f}-{max(publish_ratios):.2f})"
    )


if __name__ == "__main__":
    main()
