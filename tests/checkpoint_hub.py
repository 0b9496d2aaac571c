"""A hub whose long job checkpoints each step and SIGKILLs its own process after step 5:
``python -m tests.checkpoint_hub URL``. Prints ``ready`` once serving."""

from __future__ import annotations

import os
import signal
import sys

import trio

from actionhub import ActionHub, Job

STEPS = 10


def bind_long_job(hub: ActionHub, ran: list[int], die_after: int | None) -> None:
    """Action "long": steps 0..9, resuming after the last checkpointed one."""

    @hub.action("long", max_workers=1)
    async def long(job: Job) -> None:
        first = 0 if job.progress is None else job.progress["done"] + 1  # type: ignore[call-overload,index,operator]
        for step in range(first, STEPS):
            ran.append(step)
            await job.checkpoint({"done": step})
            if step == die_after:
                os.kill(os.getpid(), signal.SIGKILL)


async def main(url: str) -> None:
    hub = ActionHub(url, name="doomed")
    bind_long_job(hub, [], die_after=5)
    async with hub.running():
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
