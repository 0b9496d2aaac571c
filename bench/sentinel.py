"""Redis Sentinel: throughput through the sentinels against the same primary addressed directly,
and how long a failover keeps messages from running.

    python -m bench.sentinel                  # its own primary + replica + 3 sentinels
    python -m bench.sentinel -n 20000 -r 3 --failovers 3

Throughput: per round, one hub publishes N no-op messages (8 publishing tasks, each awaiting its
publish) and runs them; the clock runs from the first publish until the last message is run and
acknowledged. Once with ``redis+sentinel://`` (the hub finds the primary through the sentinels),
once with ``redis://`` straight to the same primary, and once through the sentinels with
``durable=1`` (each publish confirmed by the replica), order rotating per round; ratios to direct
per round, medians reported. Target: sentinel / direct >= 0.9.

Failover: a hub runs messages that a publisher sends every millisecond; the primary is
SIGKILLed; the time until the first message published after the kill has run (it can only be on
the new primary), next to when every sentinel named the new primary. Sentinel here runs with
``down-after-milliseconds`` 1000 (production settings are often 5,000-30,000: add the
difference). A fresh deployment per failover. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence

import trio

from actionhub import ActionHub, Job
from actionhub.testing import RedisSentinels

WORKERS = 10
PUBLISHERS = 8


def throughput(url: str, n: int) -> float:
    """Messages per second through one hub that publishes and runs ``n`` of them."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    joiner = "&" if "?" in url else "?"

    async def run() -> float:
        finished = trio.Event()
        count = 0
        hub = ActionHub(f"{url}{joiner}prefix={prefix}")

        @hub.action("noop", min_workers=WORKERS, max_workers=WORKERS, buffer=100)
        async def noop(job: Job) -> None:
            nonlocal count
            count += 1
            if count == n:
                finished.set()

        async def publish(numbers: range) -> None:
            for number in numbers:
                await hub.publish("noop", number)

        async with hub.running():
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for first in range(PUBLISHERS):
                    nursery.start_soon(publish, range(first, n, PUBLISHERS))
            await finished.wait()
            await hub.bus.flush_acks()  # type: ignore[attr-defined]  # all acked inside the clock
            return n / (time.perf_counter() - started)

    return trio.run(run)


def failover(deployment: RedisSentinels) -> tuple[float, float]:
    """Seconds from the primary's SIGKILL until (every sentinel named the new primary, the first
    message published after the kill ran)."""

    async def run() -> tuple[float, float]:
        first_after = trio.Event()
        killed_at = 0.0
        hub = ActionHub(f"{deployment.url}?prefix=failover:")

        @hub.action("tick", max_workers=WORKERS)
        async def tick(job: Job) -> None:
            if job.payload["after"]:
                first_after.set()

        async def publish() -> None:
            while True:
                await hub.publish("tick", {"after": killed_at > 0})
                await trio.sleep(0.001)

        async with hub.running(), trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            await trio.sleep(1.0)  # steady state
            killed_at = trio.current_time()
            await trio.to_thread.run_sync(deployment.kill_primary)
            await trio.to_thread.run_sync(deployment.wait_failover)
            named = trio.current_time() - killed_at
            await first_after.wait()
            ran = trio.current_time() - killed_at
            nursery.cancel_scope.cancel()
        return named, ran

    return trio.run(run)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sentinel")
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args(argv)

    kinds = ("direct", "sentinel", "sentinel, durable=1")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    with RedisSentinels() as deployment:
        urls = {
            "direct": f"redis://127.0.0.1:{deployment.primary.port}/0",
            "sentinel": deployment.url,
            "sentinel, durable=1": f"{deployment.url}?durable=1",
        }
        for round_no in range(args.rounds):
            for kind in kinds[round_no % 3 :] + kinds[: round_no % 3]:
                rates[kind].append(throughput(urls[kind], args.messages))
    print(
        f"{args.messages:,} no-op messages x {args.rounds} rounds, published and run by one hub "
        f"({PUBLISHERS} publishing tasks, {WORKERS} workers); primary + 1 replica + 3 sentinels"
    )
    for kind in kinds:
        print(f"  {kind:>19}: {spread(rates[kind], '{:,.0f}')} msg/s")
    for kind in kinds[1:]:
        ratios = [s / d for s, d in zip(rates[kind], rates["direct"], strict=True)]
        target = "  (target >= 0.9)" if kind == "sentinel" else ""
        print(f"  ratio {kind} / direct: {spread(ratios, '{:.2f}')}{target}")

    if args.failovers:
        named, ran = [], []
        for _ in range(args.failovers):
            with RedisSentinels() as deployment:
                seconds = failover(deployment)
            named.append(seconds[0])
            ran.append(seconds[1])
        print(f"{args.failovers} failovers (SIGKILL of the primary, down-after-milliseconds 1000)")
        print(f"  every sentinel names the new primary: {spread(named, '{:.2f}')} s")
        print(f"  first message run on the new primary: {spread(ran, '{:.2f}')} s")


def spread(values: Sequence[float], form: str) -> str:
    """``median (min-max)``, each formatted with ``form``."""
    median, low, high = (form.format(v) for v in (statistics.median(values), min(values), max(values)))
    return f"{median} ({low}-{high})"


if __name__ == "__main__":
    main()
