"""`ClusterWire` against `WireConnection`: pipelined XADD throughput over 3 cluster primaries
versus one redis-server.

    python -m bench.cluster_wire                 # 20,000 XADDs per round, 3 rounds
    python -m bench.cluster_wire -n 50000 -r 5

Each round, ``callers`` concurrent tasks each send batches of 100 ``XADD`` (MAXLEN ~ 1000) over
64 streams in one ``execute``, until ``n`` XADDs went out; once through a `ClusterWire` to a
private cluster of 3 primaries (no replicas), once through one `WireConnection` to a private
single redis-server, order alternating. XADDs per second, medians. On one machine the three
primaries share its cores with the benchmark: the figure is the client's cost, not a cluster's
capacity. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actionhub.bus.redis.cluster_wire import ClusterWire
from actionhub.bus.redis.wire import Command, WireConnection, WireParams
from actionhub.testing import RedisCluster, RedisServer

BATCH = 100
KEYS = [f"bench:cw:{{{i}}}" for i in range(64)]


def params(port: int) -> WireParams:
    return WireParams("127.0.0.1", port, None, 0, None, None, None, timeout=30.0, connect_timeout=5.0)


async def rate(execute: Callable[..., Awaitable[list[Any]]], n: int, callers: int) -> float:
    """XADDs per second through ``execute``."""
    batches = n // BATCH

    async def caller(first: int) -> None:
        for b in range(first, batches, callers):
            commands: list[Command] = [
                ("XADD", KEYS[(b * BATCH + i) % len(KEYS)], "MAXLEN", "~", 1000, "*", "f", "x")
                for i in range(BATCH)
            ]
            await execute(*commands)

    await execute(("PING",))  # connected before the clock starts
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for first in range(callers):
            nursery.start_soon(caller, first)
    return batches * BATCH / (time.perf_counter() - start)


async def rounds(cluster: RedisCluster, server: RedisServer, n: int, count: int, callers: int) -> None:
    results: dict[str, list[float]] = {"cluster": [], "single": []}
    async with trio.open_nursery() as nursery:
        cw = ClusterWire(params(0), [("127.0.0.1", cluster.nodes[0].port)], nursery)
        single = WireConnection(params(server.port), nursery)
        for r in range(count):
            order = [("cluster", cw.execute), ("single", single.execute)]
            for name, execute in order if r % 2 == 0 else order[::-1]:
                results[name].append(await rate(execute, n, callers))
        cw.close()
        single.close()
    cluster_rate, single_rate = (statistics.median(results[k]) for k in ("cluster", "single"))
    print(f"ClusterWire, 3 primaries: {cluster_rate:10,.0f} XADD/s  {results['cluster']}")
    print(f"WireConnection, 1 server: {single_rate:10,.0f} XADD/s  {results['single']}")
    print(f"ratio cluster/single: {cluster_rate / single_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20000, help="XADDs per round and path")
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("-c", "--callers", type=int, default=4, help="concurrent callers")
    args = parser.parse_args()
    with RedisCluster(primaries=3, replicas=0) as cluster, RedisServer(appendonly=False) as server:
        trio.run(rounds, cluster, server, args.n, args.rounds, args.callers)


if __name__ == "__main__":
    main()
