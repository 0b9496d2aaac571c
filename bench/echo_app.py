"""The hub `bench.clients` asks: ``echo`` replies with its payload at once."""

from __future__ import annotations

from actionhub import ActionHub, Job

hub = ActionHub()


@hub.action("echo")
async def echo(job: Job) -> None:
    await job.reply(job.payload)
