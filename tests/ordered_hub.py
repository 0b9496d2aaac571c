"""An ordered hub in a process of its own, for the multi-process ordering tests.

    python -m tests.ordered_hub URL OUT_FILE --name NAME [--work SECONDS]

Action ``orders`` (ordered, 16 partitions) writes ``S <key> <seq> <name> <ns>`` when it starts
a message and ``E <key> <seq> <name> <ns>`` when it is done, before the ack (``<ns>``: the
machine-wide monotonic clock, comparable between processes). Prints ``ready`` once serving;
SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import time

import trio

from actionhub import ActionHub, Job
from tests.hub_process import serve_until_terminated

PARTITIONS = 16


async def serve(url: str, out: str, name: str, work: float) -> None:
    hub = ActionHub(url, name=name, announce_interval=0.5)
    with open(out, "a", buffering=1) as lines:  # noqa: ASYNC230 - opened once, before serving

        @hub.action("orders", ordered=True, partitions=PARTITIONS, max_workers=16, buffer=100)
        async def orders(job: Job) -> None:
            lines.write(f"S {job.key} {job.payload} {name} {time.monotonic_ns()}\n")
            await trio.sleep(work)
            lines.write(f"E {job.key} {job.payload} {name} {time.monotonic_ns()}\n")

        await serve_until_terminated(hub)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--name", required=True)
    parser.add_argument("--work", type=float, default=0.002)
    args = parser.parse_args()
    trio.run(serve, args.url, args.out, args.name, args.work)


if __name__ == "__main__":
    main()
