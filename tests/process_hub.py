"""A hub with a process-isolated action, in a process of its own: ``python -m tests.process_hub``.

Prints ``ready`` once both worker processes run and each holds a 60 s CPU-bound job; the test
then SIGKILLs it and checks that the worker processes do not outlive it.
"""

from __future__ import annotations

import trio

from actionhub import ActionHub
from tests import process_jobs


async def main() -> None:
    hub = ActionHub()
    hub.bind("burn", process_jobs.burn, isolation="process", min_workers=2, max_workers=2)  # type: ignore[arg-type]
    async with hub.running():
        for _ in range(2):
            await hub.publish("burn", {"seconds": 60})
        while next(iter(hub.stats())).in_flight < 2:  # noqa: ASYNC110 - a helper's poll
            await trio.sleep(0.05)
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
