"""The hub the chaos scenarios run in processes of their own, and kill, stop and starve.

    python -m tests.chaos.worker URL OUT [--name NAME] [--work SECONDS] [--workers N] [--buffer N]
                                          [--shutdown-timeout S] [--probe FILE] [--probe-every S]
                                          [--fail-while FILE] [--write-to REDIS_URL]
                                          [--health-port PORT]

Action ``work`` (topic ``work``) takes ``{"i": <int>}``, sleeps ``--work`` seconds (0: none) and
then appends ``"<i> <attempt> <seconds since it was published>"`` to OUT, before the ack: a line is a
finished run, so a message whose process dies after the line and before the ack shows up twice.
``--probe`` appends a JSON line every ``--probe-every`` seconds: RSS, open file descriptors, trio
tasks and messages processed, for the soak and overload figures. A dependency of the action:
``--fail-while FILE`` makes it raise while FILE exists (a store that went away), ``--write-to`` makes
it ``SADD`` its number to the set ``written`` of that Redis first (a store that is the bus's own
Redis, restarted and paused with it). ``--health-port`` serves /healthz and /readyz. Prints
``ready`` once serving; the first SIGTERM stops it gracefully (exit 0).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Callable
from functools import partial

import orjson
import redis
import trio

from actionhub import ActionHub, Job
from actionhub.health import serve_health

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def trio_tasks() -> int:
    """Every live task of this trio run, counted from the root down."""
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def probe(hub: ActionHub, path: str, every: float) -> None:
    with open(path, "ab", buffering=0) as out:  # noqa: ASYNC230 - small appends, like the log
        while True:
            processed = sum(stat.total_message_processed for stat in hub.stats())
            sample = {
                "t": time.time(),
                "rss": rss_bytes(),
                "fds": open_fds(),
                "tasks": trio_tasks(),
                "processed": processed,
            }
            out.write(orjson.dumps(sample) + b"\n")
            await trio.sleep(every)


def store_writer(url: str) -> Callable[[int], None]:
    """``SADD written <i>`` on the Redis at ``url``, failing fast (2 s) when it does not answer."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return lambda i: client.sadd("written", i)


async def serve(args: argparse.Namespace) -> None:
    hub = ActionHub(args.url, name=args.name)
    write = store_writer(args.write_to) if args.write_to else None
    with open(args.out, "a", buffering=1) as lines:  # noqa: ASYNC230 - opened once, before serving

        @hub.action(
            "work",
            min_workers=1,
            max_workers=args.workers,
            buffer=args.buffer,
            shutdown_timeout=args.shutdown_timeout,
        )
        async def work(job: Job) -> None:
            if args.work:
                await trio.sleep(args.work)
            if args.fail_while and os.path.exists(args.fail_while):  # noqa: ASYNC240 - one stat()
                raise ConnectionError("the store is unreachable")
            if write is not None:
                await trio.to_thread.run_sync(write, job.payload["i"])
            # from when Redis added the entry (its id is its time in ms), not from when the
            # producer made the envelope: the producer's own delays are not the hub's latency
            entry_ms, _, sequence = job.message.id.partition("-")
            added = int(entry_ms) / 1000 if sequence.isdigit() else job.message.created_at
            latency = time.time() - added
            lines.write(f"{job.payload['i']} {job.attempt} {latency:.6f}\n")

        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with hub.running(), trio.open_nursery() as nursery:
                if args.probe:
                    nursery.start_soon(probe, hub, args.probe, args.probe_every)
                if args.health_port:
                    await nursery.start(partial(serve_health, hub, args.health_port, host="127.0.0.1"))
                print("ready", flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--name", default="chaos")
    parser.add_argument("--work", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--buffer", type=int, default=100)
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    parser.add_argument("--probe")
    parser.add_argument("--probe-every", type=float, default=1.0)
    parser.add_argument("--fail-while")
    parser.add_argument("--write-to")
    parser.add_argument("--health-port", type=int)
    trio.run(serve, parser.parse_args())


if __name__ == "__main__":
    main()
