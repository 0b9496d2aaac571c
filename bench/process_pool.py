"""CPU-bound jobs per second: isolation="process" with 1 and 2 processes against the same function
run in the hub's own thread, and how an echo action in the same hub fares meanwhile.

    python -m bench.process_pool [-n JOBS] [--fib N]

Each job computes ``fib(N)`` in pure Python (tests/process_jobs.py). Every row runs on memory://
in one hub; ratios are within one run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from actionhub import ActionHub, Job
from tests.process_jobs import cpu_job


def _cpu(hub: ActionHub) -> Any:
    return next(s for s in hub.stats() if s.addr == "cpu")


async def _run(
    n: int, fib_n: int, bind: Callable[[ActionHub], None], processes: int
) -> tuple[float, list[float]]:
    """Jobs per second through the "cpu" group, and echo latencies (s) measured meanwhile."""
    hub = ActionHub()
    bind(hub)
    latencies: list[float] = []

    @hub.action("echo", max_workers=1)
    async def echo(job: Job) -> None:
        latencies.append(time.perf_counter() - job.payload["sent"])  # type: ignore[index,operator]

    async with hub.running():
        while _cpu(hub).processes_alive < processes:  # noqa: ASYNC110 - processes start in other processes
            await trio.sleep(0.05)  # the clock starts once they run
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:

            @nursery.start_soon
            async def produce() -> None:  # waits for buffer room: a task of its own
                for _ in range(n):
                    await hub.publish("cpu", {"n": fib_n})

            @nursery.start_soon
            async def tick() -> None:
                # echoes are due every 10 ms; latency counts from when one was due, so time the
                # hub's thread spends elsewhere (say, in a CPU-bound job) shows
                for k in itertools.count(1):
                    due = started + k * 0.01
                    await trio.sleep_until(trio.current_time() + max(0.0, due - time.perf_counter()))
                    await hub.publish("echo", {"sent": due})

            while _cpu(hub).total_message_processed < n:  # noqa: ASYNC110 - a benchmark's poll
                await trio.sleep(0.01)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    return n / elapsed, latencies


def _in_thread(hub: ActionHub) -> None:
    @hub.action("cpu", max_workers=2)
    async def cpu(job: Job) -> None:
        cpu_job(job.payload)  # type: ignore[arg-type]


def _processes(count: int) -> Callable[[ActionHub], None]:
    def bind(hub: ActionHub) -> None:
        hub.bind("cpu", cpu_job, isolation="process", min_workers=count, max_workers=count)  # type: ignore[arg-type]

    return bind


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.process_pool")
    parser.add_argument("-n", "--jobs", type=int, default=200)
    parser.add_argument("--fib", type=int, default=22, help="size of each job (fib(N), pure Python)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, Callable[[ActionHub], None], int]] = [
        ("in the hub's thread", _in_thread, 0),
        ("isolation=process, 1 process", _processes(1), 1),
        ("isolation=process, 2 processes", _processes(2), 2),
    ]
    print(f"{args.jobs} jobs of fib({args.fib}) on memory://, one hub; echo latency sampled every 10 ms")
    base = None
    for label, bind, processes in rows:
        rate, latencies = trio.run(_run, args.jobs, args.fib, bind, processes)
        base = base or rate
        echo = (
            f"echo p50 {statistics.median(latencies) * 1e3:6.2f} ms, max {max(latencies) * 1e3:7.2f} ms"
            if latencies
            else "no echo sampled"
        )
        print(f"  {label:32s}: {rate:8,.0f} jobs/s  ({rate / base:4.2f}x)  {echo}")


if __name__ == "__main__":
    main()
