"""What ``durable=1`` costs: publishes confirmed by a replica (``WAIT 1``) against plain ones.

    python -m bench.durable                      # a private primary and replica (no persistence)
    python -m bench.durable --replica-delay 0.0005   # the replica's link 0.5 ms late each way
    python -m bench.durable -n 20000 --primary redis://127.0.0.1:6379/0   # one with a replica

One hub on the primary, its URL ``durable=0``; each publish says ``durable=0`` or ``durable=1``
(the per-publish override), so both kinds run on the same hub and connections, in turns:

* ``one at a time``: each publish awaited before the next (a request handler): the latency;
* ``32 at once``: 32 tasks publishing: the throughput of one hub;
* ``publish_many``: batches of 1,000 (one script and one WAIT per batch);
* ``end to end``: 32 tasks publish while the hub's no-op action (100 workers) consumes; timed
  until every message ran (acks are not confirmed: docs/reliability.md says why);

and the blocking `Client`, one at a time. Kinds take turns in blocks; ratios are per round,
medians reported. Both servers share this machine's cores with the hub; on loopback the
replica answers within tens of microseconds, so ``--replica-delay`` shows what a replica on
another host costs. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial

import orjson
import redis
import trio

from actionhub import ActionHub, BusError, Job
from actionhub.bus.base import Bus
from actionhub.bus.url import open_bus
from actionhub.client import Client
from actionhub.message import Message
from actionhub.testing import RedisServer

PAYLOAD = {"order_id": 123456, "customer": "cust-000042", "amount_cents": 1999}
TASKS = 32
BATCH = 1000
BLOCK = 500


@contextlib.contextmanager
def primary_url(url: str | None, delay: float) -> Iterator[str]:
    """``url`` if given (it must have a replica), else a private primary with one replica, its
    link through a process that delays it by ``delay`` seconds each way (if > 0)."""
    if url is not None:
        yield url
        return
    with linked(delay) as (primary, _, _):
        yield primary.url


@contextlib.contextmanager
def linked(delay: float) -> Iterator[tuple[RedisServer, redis.Redis, Callable[[], None]]]:
    """A private primary, a client of its one replica, and what kills the primary with what is
    on its way to the replica (the delaying process too), as a dead host (see `primary_url`)."""
    # a replica's first sync at once (Redis waits 5 s for more replicas by default)
    first_sync_now = ("--repl-diskless-sync-delay", "0")
    with RedisServer(appendonly=False, extra_args=first_sync_now) as primary, contextlib.ExitStack() as stack:
        port, kill = primary.port, primary.kill
        if delay > 0:
            line = [sys.executable, "-m", "bench.durable", "--delay-line", str(port), str(delay)]
            proxy = stack.enter_context(subprocess.Popen(line, stdout=subprocess.PIPE, text=True))
            stack.callback(proxy.kill)
            assert proxy.stdout is not None
            port = int(proxy.stdout.readline())

            def kill() -> None:
                proxy.kill()
                primary.kill()

        replica_of = ("--replicaof", "127.0.0.1", str(port))
        replica = stack.enter_context(RedisServer(appendonly=False, extra_args=replica_of))
        stack.callback(replica.kill)  # a replica of a dead primary takes seconds to stop gracefully
        on_replica = redis.Redis(port=replica.port)
        while on_replica.info("replication").get("master_link_status") != "up":
            time.sleep(0.05)
        yield primary, on_replica, kill


def delay_line(target: int, delay: float) -> None:
    """Forward a loopback port to ``target``, each chunk ``delay`` seconds late (latency, not a
    rate limit: a chunk waits for its time only); prints the port."""

    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def forward() -> None:
            async for due, data in receive:
                await trio.sleep_until(due)
                await sink.send_all(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            while data := await source.receive_some(1 << 16):
                send.send_nowait((trio.current_time() + delay, data))
            nursery.cancel_scope.cancel()

    async def handle(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", target)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, server)
            nursery.start_soon(pump, server, client)

    async def serve() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(listeners[0].socket.getsockname()[1], flush=True)
        await trio.serve_listeners(handle, listeners)

    trio.run(serve)


async def _at_once(publish: Callable[[], Awaitable[object]], count: int) -> None:
    async def some(n: int) -> None:
        for _ in range(n):
            await publish()

    async with trio.open_nursery() as nursery:
        for task in range(TASKS):
            nursery.start_soon(some, count // TASKS + (task < count % TASKS))


KINDS = ["one at a time", f"{TASKS} at once", "publish_many", "end to end"]


def hub_rates(url: str, n: int) -> dict[str, float]:
    """Messages per second of each kind and ``durable`` (0 or 1) on one hub."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    elapsed = {(kind, d): 0.0 for kind in KINDS for d in (0, 1)}
    counts = dict.fromkeys(elapsed, 0)

    async def run() -> None:
        hub = ActionHub(f"{url}?prefix={prefix}&durable=0")
        done = trio.Semaphore(0)

        @hub.action("consumed", max_workers=100, buffer=1000)
        async def consumed(job: Job) -> None:
            done.release()

        async with hub.running():
            await hub.publish("orders", PAYLOAD, durable=1)
            for block in range(max(1, n // BLOCK)):
                for kind in KINDS:
                    for durable in (block % 2, 1 - block % 2):
                        if kind == "publish_many" and block % (BATCH // BLOCK):
                            continue  # a batch every other turn: as many messages as the others
                        count = {"one at a time": BLOCK, "publish_many": BATCH}.get(kind, BLOCK * 4)
                        publish = partial(hub.publish, "orders", PAYLOAD, durable=durable)
                        started = time.perf_counter()
                        if kind == "one at a time":
                            for _ in range(count):
                                await publish()
                        elif kind == "publish_many":
                            await hub.publish_many("orders", [PAYLOAD] * count, durable=durable)
                        elif kind == "end to end":
                            await _at_once(partial(hub.publish, "consumed", PAYLOAD, durable=durable), count)
                            for _ in range(count):
                                await done.acquire()
                        else:
                            await _at_once(publish, count)
                        elapsed[kind, durable] += time.perf_counter() - started
                        counts[kind, durable] += count
                await hub.bus.execute([("DEL", f"{prefix}orders")], what="clean up")  # type: ignore[attr-defined]

    trio.run(run)
    return {f"{kind}, durable={d}": counts[kind, d] / elapsed[kind, d] for kind, d in elapsed}


def loss(durable: int, delay: float, seconds: float) -> tuple[int, int]:
    """SIGKILL the primary after ``seconds`` of 32 tasks publishing on a hub's bus (as
    ``hub.publish`` does, without a hub's chores to stop after): (publishes that returned, of them
    missing on the replica, which a failover would promote)."""
    with linked(delay) as (primary, on_replica, kill):
        returned: list[str] = []

        async def publish(bus: Bus, task: int) -> None:
            with contextlib.suppress(BusError):  # once the primary is gone
                for n in itertools.count():
                    returned.append(await bus.publish(Message("orders", {"task": task, "n": n})))

        async def run() -> None:
            bus = open_bus(f"{primary.url}?durable={durable}&publish_timeout=1")
            async with bus.open("loss", serving=False), trio.open_nursery() as nursery:
                for task in range(TASKS):
                    nursery.start_soon(publish, bus, task)
                await trio.sleep(seconds)
                kill()

        trio.run(run)
        there = {
            orjson.loads(fields[b"message"])["id"] for _, fields in on_replica.xrange("actionhub:orders")
        }
        on_replica.connection_pool.disconnect()
        return len(returned), len(set(returned) - there)


def client_rates(url: str, n: int) -> dict[str, float]:
    """Publishes per second of the blocking `Client`, one at a time, per ``durable``."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    elapsed = {0: 0.0, 1: 0.0}
    with Client(f"{url}?prefix={prefix}") as client:
        client.publish("orders", PAYLOAD, durable=1)
        for block in range(max(1, n // BLOCK)):
            for durable in (block % 2, 1 - block % 2):
                started = time.perf_counter()
                for _ in range(BLOCK):
                    client.publish("orders", PAYLOAD, durable=durable)
                elapsed[durable] += time.perf_counter() - started
        client._client.delete(f"{prefix}orders")
    calls = max(1, n // BLOCK) * BLOCK
    return {f"Client one at a time, durable={d}": calls / elapsed[d] for d in elapsed}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-n", "--messages", type=int, default=4000, help="publishes per kind and round (4000)"
    )
    parser.add_argument("-r", "--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--primary", help="a Redis primary with a replica, instead of private ones")
    parser.add_argument(
        "--replica-delay", type=float, default=0.0, metavar="S", help="its link S s late each way"
    )
    parser.add_argument("--kill-after", type=float, default=2.0, metavar="S", help="the kill's moment (2 s)")
    parser.add_argument("--delay-line", nargs=2, help=argparse.SUPPRESS)  # the delaying process itself
    args = parser.parse_args(argv)
    if args.delay_line:
        delay_line(int(args.delay_line[0]), float(args.delay_line[1]))
        return
    rates: dict[str, list[float]] = {}
    with primary_url(args.primary, args.replica_delay) as url:
        for _ in range(args.rounds):
            for name, rate in {**hub_rates(url, args.messages), **client_rates(url, args.messages)}.items():
                rates.setdefault(name, []).append(rate)
    link = f", its link {args.replica_delay * 1000:g} ms late each way" if args.replica_delay else ""
    print(f"durable=1 (WAIT 1) vs durable=0, {args.rounds} round(s); {url} and one replica{link}")
    print("msg/s, median (min-max)")
    for name, values in rates.items():
        print(f"  {name:<38}{statistics.median(values):>10,.0f} ({min(values):,.0f}-{max(values):,.0f})")
    print("durable=1 / durable=0, per round: median (min-max)")
    for name in rates:
        if name.endswith("durable=1"):
            base = name.removesuffix(", durable=1")
            ratios = [a / b for a, b in zip(rates[name], rates[f"{base}, durable=0"], strict=True)]
            print(f"  {base:<38}{statistics.median(ratios):>10.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    if args.primary is None:
        print(f"the primary SIGKILLed after {args.kill_after:g} s of {TASKS} tasks publishing (one run each)")
        for durable in (0, 1):
            returned, missing = loss(durable, args.replica_delay, args.kill_after)
            print(f"  durable={durable}: {returned:,} publishes returned, {missing:,} not on the replica")


if __name__ == "__main__":
    main()
