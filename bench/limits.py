"""What a group's limits cost when they do not bind: no-op messages through one hub on Redis
streams, with no limit, with a ``rate_limit`` far above what the group reaches, and with a
``concurrency_limit`` above ``max_workers``.

    python -m bench.limits                  # starts its own redis-server on a free port
    python -m bench.limits -n 50000 -r 5 --url redis://127.0.0.1:6379/0

Each run pre-fills a fresh stream with N wire-format entries (not timed), then times how long
the hub takes to process and acknowledge all of them, from its first run on (its start-up, the
same for every kind but a large share of a short run, is left out). The three kinds alternate within a round,
their order rotating from round to round, so machine drift hits all of them; each limited rate
is divided by the unlimited rate of its own round, and the median ratio is reported (targets:
>= 0.9 for the rate limit, >= 0.8 for the concurrency limit). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis
import trio

from actionhub import ActionHub, Job
from bench import redis_url
from bench.redis_streams import fill

KINDS = ("none", "rate", "concurrency")


def limits_of(kind: str, workers: int) -> dict[str, Any]:
    if kind == "rate":
        return {"rate_limit": "1000000/s"}  # far above what one hub reaches
    if kind == "concurrency":
        return {"concurrency_limit": workers * 2}  # above max_workers
    return {}


def fast_path(hub: ActionHub) -> float | None:
    """Seconds per run that the group's limiter costs when it does not bind: a run passing the
    gate and leaving it, timed in a tight loop right after the timed run (tokens and free slots
    at hand, as in the steady state). None if they are not at hand."""
    gate = hub.group("noop").runner.gate
    assert gate is not None
    limiter: Any = gate.limiter
    loops = 100_000
    if hasattr(limiter, "_tokens") and limiter.spec.rate is not None:
        limiter._tokens = loops * 10  # as many as the loop takes: no top-up call within it
    started = time.perf_counter()
    for _ in range(loops):
        if not gate.try_enter():
            return None
        gate.leave()
    return (time.perf_counter() - started) / loops


def hub(url: str, client: redis.Redis, n: int, workers: int, kind: str) -> tuple[float, float | None]:
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    stream = f"{prefix}noop"
    client.xgroup_create(stream, "noop", id="0", mkstream=True)
    fill(client, stream, n)

    async def run() -> float:
        finished = trio.Event()
        count = 0
        started = 0.0
        hub = ActionHub(f"{url}?prefix={prefix}")

        @hub.action("noop", min_workers=workers, max_workers=workers, buffer=100, **limits_of(kind, workers))
        async def noop(job: Job) -> None:
            nonlocal count, started
            if count == 0:  # the clock starts with the first run: the hub's start-up is not timed
                started = time.perf_counter()
            count += 1
            if count == n:
                finished.set()

        async with hub.running():
            await finished.wait()
            await hub.bus.flush_acks()  # type: ignore[attr-defined]  # all acked inside the clock
            (stat,) = hub.stats()
            elapsed = time.perf_counter() - started
            cost = None if kind == "none" else fast_path(hub)
        assert client.xpending(stream, "noop")["pending"] == 0
        assert stat.total_throttled <= n
        return n / elapsed, cost

    rate, cost = trio.run(run)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    return rate, cost


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limits")
    parser.add_argument("-n", "--messages", type=int, default=30_000)
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("-w", "--workers", type=int, default=10)
    parser.add_argument("--url", help="a Redis to use (default: start a private redis-server)")
    args = parser.parse_args(argv)

    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    costs: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with redis_url(args.url) as url:
        client = redis.Redis.from_url(url)
        hub(url, client, 2_000, args.workers, "none")  # warm up: imports, the first connections
        for round_no in range(args.rounds):
            shift = round_no % len(KINDS)
            for kind in KINDS[shift:] + KINDS[:shift]:
                rate, cost = hub(url, client, args.messages, args.workers, kind)
                rates[kind].append(rate)
                if cost is not None:
                    costs[kind].append(cost)
    print(
        f"{args.messages:,} no-op messages x {args.rounds} rounds, one hub on Redis streams, "
        f"{args.workers} workers ({url}); median (min-max)"
    )
    labels = {
        "none": "no limit",
        "rate": "rate_limit='1000000/s' (far above reach)",
        "concurrency": f"concurrency_limit={args.workers * 2} (above max_workers)",
    }
    for kind in KINDS:
        print(f"  {labels[kind]:<42}: {statistics.median(rates[kind]):>9,.0f} msg/s")
    for kind, target in (("rate", 0.9), ("concurrency", 0.8)):
        ratios = [limited / plain for limited, plain in zip(rates[kind], rates["none"], strict=True)]
        print(
            f"  ratio {kind}/none: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            f"  target >= {target}"
        )
    per_message = 1 / statistics.median(rates["none"])
    for kind in ("rate", "concurrency"):
        if costs[kind]:
            cost = statistics.median(costs[kind])
            print(
                f"  {kind} limiter's own time per run (tight loop): {cost * 1e6:.2f} us, "
                f"{cost / per_message:.1%} of a message's time without limits"
            )


if __name__ == "__main__":
    main()
