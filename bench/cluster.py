"""Redis Cluster: throughput over many topics on 3 primaries against one node, how evenly the
primaries share Redis's work, and how long a primary's failover keeps messages from running.

    python -m bench.cluster                   # its own single node and cluster of 3 primaries
    python -m bench.cluster -n 20000 -r 3 --topics 64 --failovers 3
    python -m bench.cluster --failovers 0 --commands   # and the commands per message, per node

Throughput: per round, one hub publishes N no-op messages spread round-robin over T topics (8
publishing tasks, each awaiting its publish) and runs them; the clock runs from the first publish
until the last message is run and acknowledged. Once on a single redis-server (``redis://``) and
once on a cluster of 3 primaries without replicas (``redis+cluster://``), order alternating per
round; the ratio cluster / single per round, medians reported. Target: >= 1. Every Redis node and
the hub share this machine's cores (2 here): the cluster's three servers compete with the hub for
them, so this says what the cluster costs a hub, not how far three machines would go.

Spread: Redis's own CPU time (``INFO cpu``) of each primary over the cluster rounds, per message
of the topics it holds (topics hash to slots: 64 topics do not fall evenly on 3 nodes, so each
node's CPU is divided by its own share of the messages; the shares are printed too). Target: the
busiest primary within 20 % of the idlest per message. Also the single node's CPU per message
against the three primaries' together: what the cluster layout costs Redis.

Failover: on 3 primaries with a replica each (``cluster-node-timeout`` 2000 ms), a hub runs
messages that a publisher sends every millisecond to a topic; the primary of its slot is
SIGKILLed; the time until its replica serves the slot, and until the first message published
after the kill has run (it can only be on the promoted replica). A fresh cluster per failover.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence

import trio

from actionhub import ActionHub, Job
from actionhub.bus.redis.layout import ClusterKeys
from actionhub.bus.redis.slots import key_slot
from actionhub.testing import RedisCluster, RedisServer, redis_command

WORKERS = 10
PUBLISHERS = 8


def throughput(url: str, n: int, topics: int) -> float:
    """Messages per second through one hub that publishes and runs ``n`` of them over ``topics``."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    joiner = "&" if "?" in url else "?"
    names = [f"topic-{t}" for t in range(topics)]

    async def run() -> float:
        finished = trio.Event()
        count = 0
        hub = ActionHub(f"{url}{joiner}prefix={prefix}")

        async def noop(job: Job) -> None:
            nonlocal count
            count += 1
            if count == n:
                finished.set()

        for name in names:
            hub.bind(name, noop, min_workers=1, max_workers=WORKERS, buffer=100)

        async def publish(numbers: range) -> None:
            for number in numbers:
                await hub.publish(names[number % topics], number)

        async with hub.running():
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for first in range(PUBLISHERS):
                    nursery.start_soon(publish, range(first, n, PUBLISHERS))
            await finished.wait()
            await hub.bus.flush_acks()  # type: ignore[attr-defined]  # all acked inside the clock
            return n / (time.perf_counter() - started)

    return trio.run(run)


def cpu_seconds(node: RedisServer) -> float:
    """Redis's own CPU time so far (user + system), from ``INFO cpu``."""
    info = dict(
        line.split(":", 1)
        for line in redis_command(node.port, "INFO", "cpu").decode().splitlines()
        if ":" in line
    )
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_calls(node: RedisServer) -> dict[str, int]:
    """Calls so far per command, from ``INFO commandstats``."""
    calls = {}
    for line in redis_command(node.port, "INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_") :].partition(":")
            calls[name] = int(dict(field.split("=") for field in stats.split(","))["calls"])
    return calls


def commands_per_message(before: dict[str, int], after: dict[str, int], messages: float) -> str:
    """The commands called between two `command_calls`, per message, the most called first."""
    per = {name: (count - before.get(name, 0)) / messages for name, count in after.items()}
    top = sorted(((n, c) for n, c in per.items() if c >= 0.01), key=lambda item: -item[1])
    return f"{sum(per.values()):.2f}: " + ", ".join(f"{name} {count:.2f}" for name, count in top)


def failover(cluster: RedisCluster) -> tuple[float, float]:
    """Seconds from the SIGKILL of the primary of a topic's slot until (its replica serves the
    slot, the first message published after the kill ran)."""
    url = f"{cluster.url}?prefix=failover:"
    primary = cluster.primary_of(key_slot(ClusterKeys("failover:").stream("tick")))

    async def run() -> tuple[float, float]:
        first_after = trio.Event()
        killed_at = 0.0
        hub = ActionHub(url)

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
            await trio.to_thread.run_sync(cluster.kill, primary)
            await trio.to_thread.run_sync(cluster.wait_for_promotion, primary)
            promoted = trio.current_time() - killed_at
            await first_after.wait()
            ran = trio.current_time() - killed_at
            nursery.cancel_scope.cancel()
        return promoted, ran

    return trio.run(run)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--topics", type=int, default=64)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--commands", action="store_true", help="commands per message, per node")
    args = parser.parse_args(argv)

    kinds = ("single", "cluster")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    with RedisServer(appendonly=False) as single, RedisCluster(primaries=3, replicas=0) as cluster:
        urls = {"single": f"redis://127.0.0.1:{single.port}/0", "cluster": cluster.url}
        primaries = cluster.primaries()
        single_before = cpu_seconds(single)
        cpu_before = [cpu_seconds(node) for node in primaries]
        calls_before = [command_calls(node) for node in (single, *primaries)]
        for round_no in range(args.rounds):
            for kind in kinds[round_no % 2 :] + kinds[: round_no % 2]:
                rates[kind].append(throughput(urls[kind], args.messages, args.topics))
        single_cpu = cpu_seconds(single) - single_before
        cpu = [cpu_seconds(node) - before for node, before in zip(primaries, cpu_before, strict=True)]
        calls_after = [command_calls(node) for node in (single, *primaries)]
        # a topic's slot comes from its hash tag alone, whatever the prefix of each round
        streams = [ClusterKeys("x:").stream(f"topic-{t}") for t in range(args.topics)]
        owners = [cluster.primary_of(key_slot(stream)) for stream in streams]
        topics_per_node = [sum(owner is node for owner in owners) for node in primaries]
    messages = args.messages * args.rounds
    print(
        f"{args.messages:,} no-op messages over {args.topics} topics x {args.rounds} rounds, published "
        f"and run by one hub ({PUBLISHERS} publishing tasks); single node vs 3 primaries, one machine"
    )
    for kind in kinds:
        print(f"  {kind:>7}: {spread(rates[kind], '{:,.0f}')} msg/s")
    ratios = [c / s for c, s in zip(rates["cluster"], rates["single"], strict=True)]
    print(f"  ratio cluster / single: {spread(ratios, '{:.2f}')}  (target >= 1)")
    print(
        f"  Redis CPU per message: single node {single_cpu * 1e6 / messages:.1f} us, the cluster's "
        f"3 primaries together {sum(cpu) * 1e6 / messages:.1f} us"
    )
    # each primary's CPU over the messages of the topics it holds: what one message costs there
    handled = [messages * held / args.topics for held in topics_per_node]
    per_message = [seconds * 1e6 / count for seconds, count in zip(cpu, handled, strict=True) if count]
    print(
        f"  each primary, per message of its own topics: {', '.join(f'{us:.1f}' for us in per_message)} us "
        f"(topics held: {', '.join(map(str, topics_per_node))}); busiest / idlest "
        f"{max(per_message) / min(per_message):.2f}  (target <= 1.20)"
    )
    print(f"  share of the cluster's Redis CPU: {', '.join(f'{c / sum(cpu):.0%}' for c in cpu)}")
    if args.commands:  # each primary's over the messages of its own topics, as its CPU above
        for label, before, after, count in zip(
            ["single node", *(f"primary {i + 1}" for i in range(len(primaries)))],
            calls_before,
            calls_after,
            [messages, *handled],
            strict=True,
        ):
            if count:
                print(f"  commands per message, {label}: {commands_per_message(before, after, count)}")

    if args.failovers:
        promoted, ran = [], []
        for _ in range(args.failovers):
            with RedisCluster(primaries=3, replicas=1) as cluster:
                seconds = failover(cluster)
            promoted.append(seconds[0])
            ran.append(seconds[1])
        print(f"{args.failovers} failovers (SIGKILL of a primary, cluster-node-timeout 2000 ms)")
        print(f"  its replica serves the slots: {spread(promoted, '{:.2f}')} s")
        print(f"  first message run on the promoted replica: {spread(ran, '{:.2f}')} s")


def spread(values: Sequence[float], form: str) -> str:
    """``median (min-max)``, each formatted with ``form``."""
    median, low, high = (form.format(v) for v in (statistics.median(values), min(values), max(values)))
    return f"{median} ({low}-{high})"


if __name__ == "__main__":
    main()
