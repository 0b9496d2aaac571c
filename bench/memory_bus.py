"""Throughput of no-op messages through an ActionHub on ``memory://``, against a bare trio loop.

Run from the repository root::

    python -m bench.memory_bus                      # 5 rounds x 50,000 messages, 1 and 10 workers
    python -m bench.memory_bus -n 20000 -r 3 -w 1 2 10

Both sides have the same shape, so the ratio is the hub's own per-message overhead:

* **bare**: one producer task sends N payloads into a bounded ``trio.open_memory_channel(buffer)``;
  W consumer tasks receive them and ``await noop(payload)``.
* **hub**: one producer task calls ``await hub.publish(topic, payload)`` N times; the action
  (``min_workers = max_workers = W``, the same ``buffer``, a long ``accept_wait``) does
  ``await noop(job.payload)``.
* **hub+metrics** (``--metrics``): the same hub with `actionhub.metrics.HubMetrics` installed, so
  every message also feeds the duration and queue-wait histograms; its ratio to **hub** is the
  per-message cost of the metrics.

The clock runs from the first send/publish to the N-th completion (a `trio.Event` set by the
consumer that finishes the last message). Start-up (hub groups, consumer tasks parked on their
channel) and shutdown are outside the clock. Each measurement runs in its own ``trio.run``;
bare and hub runs are interleaved (and their order alternates per round) so machine drift hits
both. This is a benchmark, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

import orjson
import trio
import trio.testing

from actionhub import ActionHub, Job
from actionhub.metrics import HubMetrics

#: ~100 bytes once serialised (checked in `main`): what a small command looks like.
PAYLOAD: dict[str, object] = {
    "order_id": 123456,
    "customer": "cust-000042",
    "amount_cents": 1999,
    "currency": "EUR",
    "items": [17, 42, 99],
    "express": False,
}

TARGET_RATIO = 0.5


async def noop(payload: object) -> None:
    """The work both sides do per message: nothing (an async call that returns at once)."""


class _Done:
    """Counts completions; sets ``event`` at the n-th and records when."""

    __slots__ = ("count", "event", "finished_at", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.event = trio.Event()
        self.finished_at = 0.0

    def tick(self) -> None:
        self.count += 1
        if self.count == self.n:
            self.finished_at = time.perf_counter()
            self.event.set()


# ---------------------------------------------------------------------------------------- bare


async def _bare(n: int, workers: int, buffer: int) -> float:
    done = _Done(n)
    send, receive = trio.open_memory_channel[object](buffer)

    async def consumer(rx: trio.MemoryReceiveChannel[object]) -> None:
        async with rx:
            async for payload in rx:
                await noop(payload)
                done.tick()

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(consumer, receive.clone())
        receive.close()
        await trio.testing.wait_all_tasks_blocked()  # every consumer is parked on the channel
        started_at = time.perf_counter()
        async with send:
            for _ in range(n):
                await send.send(PAYLOAD)
            await done.event.wait()
    return n / (done.finished_at - started_at)


# ----------------------------------------------------------------------------------------- hub


async def _hub(
    n: int, workers: int, buffer: int, metrics: bool = False, work: Callable[[], None] | None = None
) -> float:
    """``work``: what the action does after ``noop`` (`bench.otel`'s actions of some CPU)."""
    done = _Done(n)
    hub = ActionHub("memory://", name="bench")
    if metrics:
        HubMetrics(hub)  # the per-message duration and queue-wait histograms

    @hub.action(
        "bench.noop",
        min_workers=workers,
        max_workers=workers,
        buffer=buffer,
        accept_wait=3600.0,
        max_idleness=3600.0,
    )
    async def action(job: Job) -> None:
        await noop(job.payload)
        if work is not None:
            work()
        done.tick()

    async with hub.running():
        await trio.testing.wait_all_tasks_blocked()  # every worker is parked on its group
        started_at = time.perf_counter()
        for _ in range(n):
            await hub.publish("bench.noop", PAYLOAD)
        await done.event.wait()
    return n / (done.finished_at - started_at)


RUNNERS: dict[str, Callable[[int, int, int], object]] = {
    "bare": _bare,
    "hub": _hub,
    "hub+metrics": partial(_hub, metrics=True),
}


def measure(kind: str, n: int, workers: int, buffer: int) -> float:
    """One measurement in a fresh trio run; returns messages per second."""
    gc.collect()
    return trio.run(RUNNERS[kind], n, workers, buffer)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- main


def _fmt_rate(values: Sequence[float]) -> str:
    return f"{statistics.median(values):>9,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def _fmt_ratio(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory_bus",
        description="No-op messages/s through an ActionHub on memory:// vs a bare trio channel loop.",
    )
    parser.add_argument("-n", "--messages", type=int, default=50_000, help="messages per run (50000)")
    parser.add_argument("-r", "--rounds", type=int, default=5, help="rounds per configuration (5)")
    parser.add_argument(
        "-w", "--workers", type=int, nargs="+", default=[1, 10], help="worker counts to compare (1 10)"
    )
    parser.add_argument("-b", "--buffer", type=int, default=1000, help="channel / group buffer (1000)")
    parser.add_argument(
        "--warmup", type=int, default=5_000, help="messages of one unmeasured warm-up run per side (5000)"
    )
    parser.add_argument(
        "--metrics", action="store_true", help="also run the hub with Prometheus metrics installed"
    )
    parser.add_argument(
        "--only",
        choices=sorted(RUNNERS),
        help="run one side only (for profiling: python -m pyinstrument -m bench.memory_bus --only hub)",
    )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rounds < 1 or args.buffer < 1 or min(args.workers) < 1:
        parser.error("messages, rounds, buffer and workers must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    kinds = [args.only] if args.only else ["bare", "hub"] + (["hub+metrics"] if args.metrics else [])
    size = len(orjson.dumps(PAYLOAD))
    print(
        f"actionhub memory:// benchmark: Python {platform.python_version()} "
        f"({platform.python_implementation()}), trio {trio.__version__}, "
        f"{os.cpu_count()} CPU(s), {platform.system()} {platform.machine()}"
    )
    print(
        f"{args.messages:,} no-op messages x {args.rounds} rounds per cell, buffer {args.buffer}, "
        f"payload {size} bytes of JSON; median (min-max)"
    )
    sys.stdout.flush()

    if args.warmup:
        for kind in kinds:
            measure(kind, args.warmup, max(args.workers), args.buffer)

    results: dict[tuple[str, int], list[float]] = {(k, w): [] for k in kinds for w in args.workers}
    began = time.perf_counter()
    for round_no in range(args.rounds):
        order = kinds if round_no % 2 == 0 else kinds[::-1]  # alternate who goes first
        for workers in args.workers:
            for kind in order:
                results[kind, workers].append(measure(kind, args.messages, workers, args.buffer))
    elapsed = time.perf_counter() - began

    print()
    header = f"{'workers':>7}  "
    header += "  ".join(f"{kind + ' msg/s':>30}" for kind in kinds)
    compared = [(k, "bare") for k in kinds if k != "bare" and "bare" in kinds]
    if "hub+metrics" in kinds:
        compared.append(("hub+metrics", "hub"))
    header += "".join(f"  {'ratio ' + k + '/' + base:>26}" for k, base in compared)
    print(header)
    ratios_met = []
    for workers in args.workers:
        line = f"{workers:>7}  " + "  ".join(f"{_fmt_rate(results[k, workers]):>30}" for k in kinds)
        for kind, base in compared:
            # ratio per round (each run over the run of the same round it is compared with)
            ratios = [a / b for a, b in zip(results[kind, workers], results[base, workers], strict=True)]
            line += f"  {_fmt_ratio(ratios):>26}"
            if (kind, base) == ("hub", "bare"):
                ratios_met.append(statistics.median(ratios) >= TARGET_RATIO)
        print(line)
    print()
    if ratios_met:
        verdict = "met" if all(ratios_met) else "NOT met"
        print(f"target hub >= {TARGET_RATIO:.2f} x bare: {verdict}")
    print(f"measured in {elapsed:.1f}s")


if __name__ == "__main__":
    main()
