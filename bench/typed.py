"""What a typed payload costs: no-op actions on ``memory://`` taking the same 5-field payload as
JSON (untyped), as a pydantic model and as a msgspec Struct.

    python -m bench.typed                 # 5 rounds x 30,000 messages
    python -m bench.typed -n 10000 -r 3

Each run publishes N payloads into one hub (10 workers, buffer 1000) and times the N-th
completion from the first publish; the three kinds alternate within a round, their order turning
per round, so drift hits all of them. Targets (issue 16): pydantic >= 0.7 x untyped, msgspec >=
0.85 x. This is a benchmark, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import pydantic
import trio

from actionhub import ActionHub, Job

PAYLOAD = {"order": 123456, "customer": "cust-000042", "amount_cents": 1999, "currency": "EUR", "rush": False}


class OrderModel(pydantic.BaseModel):
    order: int
    customer: str
    amount_cents: int
    currency: str
    rush: bool


class OrderStruct(msgspec.Struct):
    order: int
    customer: str
    amount_cents: int
    currency: str
    rush: bool


KINDS: dict[str, Any] = {"untyped": None, "pydantic": OrderModel, "msgspec": OrderStruct}


async def one_run(kind: str, n: int) -> float:
    hub = ActionHub()
    done = trio.Event()
    count = 0

    async def noop(job: Job[Any]) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    hub.bind("orders", noop, payload=KINDS[kind], min_workers=10, max_workers=10, buffer=1000, accept_wait=60)
    async with hub.running():
        started = time.perf_counter()
        for _ in range(n):
            await hub.publish("orders", PAYLOAD)
        await done.wait()
        return n / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--messages", type=int, default=30_000)
    parser.add_argument("-r", "--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for round_ in range(args.rounds):
        kinds = list(KINDS)[round_ % 3 :] + list(KINDS)[: round_ % 3]
        for kind in kinds:
            rates[kind].append(trio.run(one_run, kind, args.messages))
    print(f"{args.messages:,} no-op messages x {args.rounds} rounds on memory://, 10 workers")
    base = rates["untyped"]
    for kind, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        target = {"pydantic": ">= 0.70", "msgspec": ">= 0.85"}.get(kind, "")
        print(
            f"{kind:<9} {statistics.median(values):>10,.0f} msg/s   ratio {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f})   {'target ' + target if target else ''}"
        )


if __name__ == "__main__":
    main()
