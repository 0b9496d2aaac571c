"""A hub in a process of its own, for the multi-process Redis tests.

    python -m tests.hub_process URL OUT_FILE [--work SECONDS] [--name NAME] [--die-on PAYLOAD]
                                             [--max-attempts N]

Action ``count`` appends each payload to OUT_FILE (one line per finished message, written before
the ack); on payload ``--die-on`` the process SIGKILLs itself (a crash in the middle of a job).
Prints ``ready`` once serving; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import os
import signal

import trio

from actionhub import ActionHub, Job
from tests import cluster_stopgap


async def serve(url: str, out: str, work: float, name: str, die_on: str | None, max_attempts: int) -> None:
    hub = ActionHub(url, name=name)
    with open(out, "a", buffering=1) as lines:  # noqa: ASYNC230 - opened once, before serving

        @hub.action("count", max_workers=8, buffer=50, max_attempts=max_attempts)
        async def count(job: Job) -> None:
            if str(job.payload) == die_on:
                lines.write(f"dying on {job.payload} at attempt {job.attempt}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            if work:
                await trio.sleep(work)
            lines.write(f"{job.payload}\n")

        await serve_until_terminated(hub)


async def serve_until_terminated(hub: ActionHub) -> None:
    """Run ``hub``, print ``ready`` once it serves, stop it gracefully on SIGTERM."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with hub.running():
            print("ready", flush=True)
            async for _ in signals:
                break


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--work", type=float, default=0.0)
    parser.add_argument("--name", default="proc")
    parser.add_argument("--die-on")
    parser.add_argument("--max-attempts", type=int, default=5)
    args = parser.parse_args()
    cluster_stopgap.install()
    trio.run(serve, args.url, args.out, args.work, args.name, args.die_on, args.max_attempts)


if __name__ == "__main__":
    main()
