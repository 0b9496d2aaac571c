"""What deduplicated and idempotent publishes cost, per call, one publish at a time.

    python -m bench.publish                  # starts its own redis-server on a free port
    python -m bench.publish -n 5000 -r 5 --url redis://127.0.0.1:6379/0

A plain publish is a bare XADD (its idempotency costs only a resend, see
`actionhub.bus.redis.once`); a deduplicated one runs `PUBLISH_ONCE` (EVALSHA: the dedupe key's
GET, the XADD, its SET). Per round, on one hub's bus (its trio-driven wire connection) and on the
blocking `Client`:

* ``old XADD``: the pre-issue-19 path, replayed here (the same publish down to the bus, or the
  client's operation, then a bare ``XADD`` on the same connection);
* ``plain``: ``publish(topic, payload)``;
* ``dedupe``: ``publish(topic, payload, dedupe_key=<a new key each call>)``: every call writes
  (a duplicate, which writes nothing, is cheaper);

and ``publish_many`` of 1,000 messages: the old MULTI/EXEC of XADDs vs `PUBLISH_MANY_ONCE`.
Kinds take turns in blocks of 250 calls; ratios are per round, medians reported. The
issue's targets: plain ~1.0 x the old XADD, dedupe >= 0.8 x plain. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio

from actionhub import ActionHub, tracing
from actionhub.bus.redis import entries
from actionhub.bus.redis.streams import RedisStreamsBus
from actionhub.client import Client
from actionhub.client._ops import Command, Op, Operations
from actionhub.message import Message
from bench import redis_url

PAYLOAD = {"order_id": 123456, "customer": "cust-000042", "amount_cents": 1999}
BATCH = 1000


async def _old_publish(bus: RedisStreamsBus, message: Message, **_: object) -> str:
    """streams.publish as it was before issue 19 (unkeyed, not delayed): one XADD on the wire."""
    raw = bus.encode(message)
    stream = bus.keys.stream(message.topic)
    deadline = trio.current_time() + bus.options.publish_timeout
    assert bus.wire is not None
    await bus.call_async(
        partial(bus.wire.execute, ("XADD", stream, "*", "message", raw)), what="publish", deadline=deadline
    )
    return message.id


async def _old_publish_many(bus: RedisStreamsBus, messages: Sequence[Message]) -> None:
    """streams.publish_many as it was: one MULTI/EXEC of XADDs per 1,000, in a thread."""
    entries = [(bus.keys.stream(m.topic), bus.encode(m)) for m in messages]

    def add() -> None:
        with bus.client.pipeline(transaction=True) as pipe:
            for stream, raw in entries:
                pipe.xadd(stream, {"message": raw})
            pipe.execute()

    await bus.call(add, what="publish")


#: Calls of one kind in a row before the next kind's turn: kinds take turns in small blocks, so
#: a busy moment of a shared machine hits them all alike.
BLOCK = 250


def hub_rates(url: str, n: int, kinds: Sequence[str]) -> dict[str, float]:
    """Calls per second of each kind (publish_many: messages per second) on one hub's bus."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"

    async def run() -> dict[str, float]:
        hub = ActionHub(f"{url}?prefix={prefix}")
        elapsed = dict.fromkeys(kinds, 0.0)
        counts = dict.fromkeys(kinds, 0)
        run_id = uuid.uuid4().hex[:8]
        async with hub.running():
            bus = hub.bus
            assert isinstance(bus, RedisStreamsBus) and bus.wire is not None
            await hub.publish("warm-up", PAYLOAD)
            await _old_publish_many(bus, [Message("warm-up", PAYLOAD, id="w")])
            for block in range(max(1, n // BLOCK)):
                for kind in kinds[block % len(kinds) :] + kinds[: block % len(kinds)]:
                    many = "many" in kind
                    if many and block % (BATCH // BLOCK):
                        continue  # a batch of 1,000 every fourth turn: as many messages as the others
                    started = time.perf_counter()
                    if kind == "old XADD":  # through the hub too: only the bus's part differs
                        bus.publish = partial(_old_publish, bus)  # type: ignore[method-assign]
                        for _ in range(BLOCK):
                            await hub.publish("orders", PAYLOAD)
                        del bus.publish
                    elif kind == "plain":
                        for _ in range(BLOCK):
                            await hub.publish("orders", PAYLOAD)
                    elif kind == "dedupe":
                        for i in range(BLOCK):
                            await hub.publish("orders", PAYLOAD, dedupe_key=f"{run_id}-{block}-{i}")
                    elif kind == "old many":
                        batch = [Message("orders", PAYLOAD, id=f"x-{i}") for i in range(BATCH)]
                        await _old_publish_many(bus, batch)
                    else:
                        await hub.publish_many("orders", [PAYLOAD] * BATCH)
                    elapsed[kind] += time.perf_counter() - started
                    counts[kind] += BATCH if many else BLOCK
                if block % 8 == 7:
                    await bus.execute([("DEL", bus.keys.stream("orders"))], what="clean up")
            await bus.execute([("DEL", bus.keys.stream("orders"))], what="clean up")
        return {kind: counts[kind] / elapsed[kind] for kind in kinds if counts[kind]}

    return trio.run(run)


def _old_client_publish(ops: Operations, topic: str, payload: object) -> Op[str]:
    """`Client.publish`'s operation as it was before issue 19 (unkeyed, not delayed): one XADD."""
    message = ops._message(topic, payload, None, None)
    raw = entries.encode_entry(message, ops.options.max_message_bytes)
    span = tracing.start_send(topic, message.id, headers=message.headers)
    assert span is None
    yield Command(("XADD", ops.keys.stream(topic), "*", "message", raw))
    return message.id


def client_rates(url: str, n: int, kinds: Sequence[str]) -> dict[str, float]:
    """Calls per second of each kind with the blocking `Client` (``old XADD``: the command the
    client used to send, on the same redis-py connection)."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    elapsed = dict.fromkeys(kinds, 0.0)
    run_id = uuid.uuid4().hex[:8]
    with Client(f"{url}?prefix={prefix}") as client:
        redis_client: Any = client._client
        stream = f"{prefix}orders"
        client.publish("warm-up", PAYLOAD)
        calls: dict[str, Callable[[int], object]] = {
            "old XADD": lambda i: client._run(_old_client_publish(client._ops, "orders", PAYLOAD), "publish"),
            "plain": lambda i: client.publish("orders", PAYLOAD),
            "dedupe": lambda i: client.publish("orders", PAYLOAD, dedupe_key=f"{run_id}-{i}"),
        }
        for block in range(max(1, n // BLOCK)):
            for kind in kinds[block % len(kinds) :] + kinds[: block % len(kinds)]:
                call = calls[kind]
                started = time.perf_counter()
                for i in range(block * BLOCK, (block + 1) * BLOCK):
                    call(i)
                elapsed[kind] += time.perf_counter() - started
            if block % 8 == 7:
                redis_client.delete(stream)
        redis_client.delete(stream)
    return {kind: max(1, n // BLOCK) * BLOCK / elapsed[kind] for kind in kinds}


def _row(name: str, values: list[float], unit: str = "/s") -> str:
    return f"  {name:<26}{statistics.median(values):>12,.0f}{unit} ({min(values):,.0f}-{max(values):,.0f})"


def _ratio(name: str, ratios: list[float], target: str = "") -> str:
    return f"  {name:<26}{statistics.median(ratios):>12.2f}   ({min(ratios):.2f}-{max(ratios):.2f}) {target}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--calls", type=int, default=5000, help="calls per kind and round (5000)")
    parser.add_argument("-r", "--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--url", help="a Redis to use instead of a private one")
    args = parser.parse_args(argv)
    single = ["old XADD", "plain", "dedupe"]
    many = ["old many", "publish_many"]
    hub: dict[str, list[float]] = {kind: [] for kind in single + many}
    client: dict[str, list[float]] = {kind: [] for kind in single}
    with redis_url(args.url) as url:
        for round_no in range(args.rounds):
            order = single + (many if round_no % 2 else many[::-1])
            for kind, rate in hub_rates(url, args.calls, order).items():
                hub[kind].append(rate)
            for kind, rate in client_rates(url, args.calls, single).items():
                client[kind].append(rate)

    def per_round(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    print(f"{args.calls:,} publishes one at a time x {args.rounds} rounds ({url}); median (min-max)")
    print("hub (its bus's wire connection)")
    for kind in single:
        print(_row(kind, hub[kind]))
    print(_row("publish_many, old MULTI", hub["old many"], " msg/s"))
    print(_row("publish_many, script", hub["publish_many"], " msg/s"))
    print(_ratio("plain / old XADD", per_round(hub["plain"], hub["old XADD"])))
    print(_ratio("dedupe / plain", per_round(hub["dedupe"], hub["plain"]), "target >= 0.8"))
    print(_ratio("dedupe / old XADD", per_round(hub["dedupe"], hub["old XADD"])))
    print(_ratio("publish_many script / old", per_round(hub["publish_many"], hub["old many"])))
    print("blocking Client (redis-py)")
    for kind in single:
        print(_row(kind, client[kind]))
    print(_ratio("plain / old XADD", per_round(client["plain"], client["old XADD"])))
    print(_ratio("dedupe / plain", per_round(client["dedupe"], client["plain"]), "target >= 0.8"))
    print(_ratio("dedupe / old XADD", per_round(client["dedupe"], client["old XADD"])))


if __name__ == "__main__":
    main()
