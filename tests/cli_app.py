"""The hub the CLI tests serve with ``actionhub run tests.cli_app:hub --bus URL --name NAME``.

``CLI_APP_OUT`` names a file where each action writes ``start <payload> <attempt>`` when it starts
and ``done <payload> <attempt>`` when it has finished (before the ack); ``CLI_APP_WORK`` is how
long ``work`` takes, in seconds.
"""

from __future__ import annotations

import os

import trio

from actionhub import ActionHub, Job

hub = ActionHub(announce_interval=0.5)
WORK = float(os.environ.get("CLI_APP_WORK", "0"))


def note(event: str, job: Job) -> None:
    with open(os.environ["CLI_APP_OUT"], "a") as out:
        out.write(f"{event} {job.payload} {job.attempt}\n")


@hub.action("work", max_workers=4, shutdown_timeout=30)
async def work(job: Job) -> None:
    note("start", job)
    await trio.sleep(WORK)
    note("done", job)


@hub.action("fail", max_attempts=1)
async def fail(job: Job) -> None:
    raise RuntimeError(f"cannot handle {job.payload}")


@hub.action("echo")
async def echo(job: Job) -> None:
    await job.reply({"echo": job.payload})
